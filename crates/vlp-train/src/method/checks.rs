//! Checking a method's settings, one way for every method: the error names the method, the
//! field, the value and what was allowed (`method `filip`: `clip_weight` = -1 must be a
//! non-negative number`).

use std::fmt::Display;
use std::ops::RangeInclusive;

use crate::error::{Result, TrainError};

/// The settings checks of one method.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    method: &'static str,
}

impl Checks {
    /// Checks for the method registered as `method`.
    pub fn new(method: &'static str) -> Self {
        Self { method }
    }

    /// The error for `field`: `why` follows the field's name.
    pub fn fail(&self, field: &str, why: impl Display) -> TrainError {
        TrainError::Config(format!("method `{}`: `{field}` {why}", self.method))
    }

    /// `value` lies in `range`.
    pub fn count(&self, field: &str, value: usize, range: RangeInclusive<usize>) -> Result<()> {
        if range.contains(&value) {
            return Ok(());
        }
        Err(self.fail(
            field,
            format!("= {value} is not in {}..={}", range.start(), range.end()),
        ))
    }

    /// `value` is a number in `[lo, hi]`.
    pub fn real(&self, field: &str, value: f64, lo: f64, hi: f64) -> Result<()> {
        if value.is_finite() && (lo..=hi).contains(&value) {
            return Ok(());
        }
        Err(self.fail(field, format!("= {value} is not in [{lo}, {hi}]")))
    }

    /// `value` is a number in `(lo, hi]`.
    pub fn real_above(&self, field: &str, value: f64, lo: f64, hi: f64) -> Result<()> {
        if value.is_finite() && value > lo && value <= hi {
            return Ok(());
        }
        Err(self.fail(field, format!("= {value} is not in ({lo}, {hi}]")))
    }

    /// `value` is a non-negative number (a loss weight).
    pub fn weight(&self, field: &str, value: f64) -> Result<()> {
        if value.is_finite() && value >= 0.0 {
            return Ok(());
        }
        Err(self.fail(field, format!("= {value} must be a non-negative number")))
    }

    /// `value` is the log of a logit scale in `[0, ln 100]` (CLIP clamps the scale at 100).
    pub fn logit_scale(&self, field: &str, value: f64) -> Result<()> {
        if value.is_finite() && (0.0..=100f64.ln()).contains(&value) {
            return Ok(());
        }
        Err(self.fail(field, format!("= {value} is not in [0, ln 100]")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<()>) -> String {
        match r {
            Err(TrainError::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn bounds_are_inclusive_where_said_and_nan_is_refused() {
        let c = Checks::new("m");
        assert!(c.count("n", 1, 1..=4).is_ok() && c.count("n", 4, 1..=4).is_ok());
        assert_eq!(
            message(c.count("n", 5, 1..=4)),
            "method `m`: `n` = 5 is not in 1..=4"
        );
        assert!(c.real("x", 0.0, 0.0, 1.0).is_ok() && c.real("x", 1.0, 0.0, 1.0).is_ok());
        assert_eq!(
            message(c.real("x", 1.5, 0.0, 1.0)),
            "method `m`: `x` = 1.5 is not in [0, 1]"
        );
        assert!(c.real_above("y", 1.0, 0.0, 1.0).is_ok());
        assert_eq!(
            message(c.real_above("y", 0.0, 0.0, 1.0)),
            "method `m`: `y` = 0 is not in (0, 1]"
        );
        assert!(c.weight("w", 0.0).is_ok());
        assert_eq!(
            message(c.weight("w", -1.0)),
            "method `m`: `w` = -1 must be a non-negative number"
        );
        assert!(c.logit_scale("s", 100f64.ln()).is_ok());
        assert!(c.logit_scale("s", 4.7).is_err());
        for bad in [
            c.real("x", f64::NAN, 0.0, 1.0),
            c.real_above("y", f64::NAN, 0.0, 1.0),
            c.weight("w", f64::INFINITY),
            c.logit_scale("s", f64::NAN),
        ] {
            assert!(message(bad).starts_with("method `m`: `"));
        }
    }
}
