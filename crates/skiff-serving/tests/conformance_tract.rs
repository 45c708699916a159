//! Runs the backend conformance suite against tract (only with the `tract` feature).
#![cfg(feature = "tract")]

use skiff_serving::backend::Backend;
use skiff_serving::backend::tract::TractBackend;

fn tract_backend() -> Box<dyn Backend> {
    Box::new(TractBackend::new())
}

skiff_serving::conformance_tests!(tract_backend);
