//! Checkpoint import errors, half-precision files, export round trips and full-size layouts.
