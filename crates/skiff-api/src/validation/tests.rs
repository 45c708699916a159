//! Validation tests: each rule with its exact field path and wording.
