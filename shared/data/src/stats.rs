//! Per-column statistics fitted the same way everywhere: `infer_card` on the public transfer set of a
//! task, and `split()` on the public part of a simulation (whose card is then drafted from that part's
//! file). One definition, so a card drafted from a file and a simulated split standardize a column
//! identically.

use crate::task::Impute;

/// The fill value and the standardization of one numeric column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NumericFit {
    /// What a missing cell becomes (raw units).
    pub fill: f64,
    /// Mean of the column after imputation (population, f64).
    pub mean: f64,
    /// Population standard deviation after imputation; 1 when below 1e-12 or not finite.
    pub std: f64,
}

/// Fits `values` (row order, NaN = missing): the fill by `impute` over the present values (median:
/// mean of the two middle values for an even count; 0 when every value is missing), then mean and
/// population std of the imputed values, summed in row order.
pub(crate) fn fit_numeric(values: &[f64], impute: Impute) -> NumericFit {
    let mut present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    let fill = match impute {
        Impute::Zero => 0.0,
        Impute::Mean if present.is_empty() => 0.0,
        Impute::Mean => present.iter().sum::<f64>() / present.len() as f64,
        Impute::Median => {
            present.sort_by(f64::total_cmp);
            match present.len() {
                0 => 0.0,
                k if k % 2 == 1 => present[k / 2],
                k => (present[k / 2 - 1] + present[k / 2]) / 2.0,
            }
        }
    };
    let imputed = || values.iter().map(|&v| if v.is_nan() { fill } else { v });
    let count = values.len().max(1) as f64;
    let mean = imputed().sum::<f64>() / count;
    let var = imputed().map(|v| (v - mean) * (v - mean)).sum::<f64>() / count;
    let std = var.sqrt();
    let std = if std.is_finite() && std > 1e-12 { std } else { 1.0 };
    NumericFit { fill, mean, std }
}

/// The most frequent level (ties to the lowest index; 0 for no levels).
pub(crate) fn mode(counts: &[usize]) -> usize {
    (0..counts.len())
        .max_by(|&a, &b| counts[a].cmp(&counts[b]).then(b.cmp(&a)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_mean_and_zero_fills() {
        let v = [1.0, f64::NAN, 3.0, 10.0];
        let m = fit_numeric(&v, Impute::Median);
        assert_eq!(m.fill, 3.0);
        assert_eq!(m.mean, (1.0 + 3.0 + 3.0 + 10.0) / 4.0);
        let a = fit_numeric(&v, Impute::Mean);
        assert_eq!(a.fill, 14.0 / 3.0);
        let z = fit_numeric(&v, Impute::Zero);
        assert_eq!((z.fill, z.mean), (0.0, 14.0 / 4.0));
        // Constant or empty columns get std 1, never 0.
        assert_eq!(fit_numeric(&[2.0, 2.0], Impute::Median).std, 1.0);
        assert_eq!(
            fit_numeric(&[f64::NAN], Impute::Median),
            NumericFit {
                fill: 0.0,
                mean: 0.0,
                std: 1.0
            }
        );
        assert_eq!(fit_numeric(&[1.0, 2.0], Impute::Median).fill, 1.5);
    }

    #[test]
    fn mode_ties_go_to_the_first_level() {
        assert_eq!(mode(&[1, 3, 3]), 1);
        assert_eq!(mode(&[]), 0);
    }
}
