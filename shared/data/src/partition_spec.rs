//! A partition written as text, as `fedistill data split --partition` takes it: `iid`, `dirichlet:A`,
//! `classes:K` or `quantity:A`.

use std::str::FromStr;

use crate::Partition;

/// Why a partition's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParsePartitionError {
    /// Not one of the four forms.
    #[error("expected iid, dirichlet:A (e.g. dirichlet:0.5), classes:K (e.g. classes:2) or quantity:A")]
    Syntax,
    /// A Dirichlet concentration that is not a finite number above zero.
    #[error("the concentration must be > 0")]
    Concentration,
    /// `classes:0`.
    #[error("at least one class per participant")]
    NoClass,
}

impl FromStr for Partition {
    type Err = ParsePartitionError;

    fn from_str(text: &str) -> Result<Partition, ParsePartitionError> {
        if text == "iid" {
            return Ok(Partition::Iid);
        }
        let (kind, value) = text.split_once(':').ok_or(ParsePartitionError::Syntax)?;
        let alpha = || -> Result<f64, ParsePartitionError> {
            let a: f64 = value.parse().map_err(|_| ParsePartitionError::Syntax)?;
            if a.is_finite() && a > 0.0 {
                Ok(a)
            } else {
                Err(ParsePartitionError::Concentration)
            }
        };
        match kind {
            "dirichlet" => Ok(Partition::Dirichlet { alpha: alpha()? }),
            "quantity" => Ok(Partition::QuantitySkew { alpha: alpha()? }),
            "classes" => match value.parse::<usize>() {
                Ok(0) => Err(ParsePartitionError::NoClass),
                Ok(k) => Ok(Partition::ClassesPerNode { k }),
                Err(_) => Err(ParsePartitionError::Syntax),
            },
            _ => Err(ParsePartitionError::Syntax),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_forms_parse_and_bad_text_is_refused() {
        assert_eq!("iid".parse(), Ok(Partition::Iid));
        assert_eq!("dirichlet:0.5".parse(), Ok(Partition::Dirichlet { alpha: 0.5 }));
        assert_eq!("quantity:2".parse(), Ok(Partition::QuantitySkew { alpha: 2.0 }));
        assert_eq!("classes:2".parse(), Ok(Partition::ClassesPerNode { k: 2 }));
        for bad in ["dirichlet", "zipf:2", "dirichlet:x", "classes:-1", "classes:1.5", ""] {
            assert_eq!(bad.parse::<Partition>(), Err(ParsePartitionError::Syntax), "{bad}");
        }
        for bad in ["dirichlet:0", "quantity:-1", "dirichlet:inf", "dirichlet:NaN"] {
            assert_eq!(
                bad.parse::<Partition>(),
                Err(ParsePartitionError::Concentration),
                "{bad}"
            );
        }
        assert_eq!("classes:0".parse::<Partition>(), Err(ParsePartitionError::NoClass));
    }
}
