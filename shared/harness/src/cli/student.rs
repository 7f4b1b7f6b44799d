//! `fedistill quantize` and `fedistill compare A B`: the student tools, whose flags are
//! [`crate::student::ExportOptions`]'s and [`crate::student::CompareOptions`]'s (with the split flags both share,
//! [`crate::student::SplitOptions`]). [`crate::student::export`] quantizes a trained MLP or CNN student
//! (optionally after QAT) into the int8 / sandwich / f16 / f32 profiles, exports them with model cards and writes
//! the quantization table; [`crate::student::compare`] A/B-compares two exported students on the same held-out
//! samples (McNemar's exact test, shadow mode) and prints the result (see docs/quantization.md).

use crate::student;

/// Runs `fedistill quantize`.
pub fn quantize(args: student::ExportOptions) -> anyhow::Result<()> {
    student::export(&args)
}

/// Runs `fedistill compare`.
pub fn compare(args: student::CompareOptions) -> anyhow::Result<()> {
    student::compare(&args)
}
