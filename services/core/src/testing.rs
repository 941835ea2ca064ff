//! Helpers shared by this crate's unit tests.

use crate::tool::{ApiParam, ApiSpec};

/// One API with one required parameter: `current_for_weather_api(city)`.
pub fn weather_api() -> ApiSpec {
    ApiSpec {
        category_name: "Weather".into(),
        tool_name: "Weather API".into(),
        api_name: "Current".into(),
        api_description: Some("Current weather".into()),
        required_parameters: vec![ApiParam {
            name: "city".into(),
            kind: "STRING".into(),
            description: None,
            default: None,
        }],
        optional_parameters: vec![],
        method: None,
        shown_description: None,
    }
}

/// Runs a future that never waits on I/O (the test doubles answer at once): one poll
/// with a no-op waker, no runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::noop();
    match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("a test future waited; the test doubles never should"),
    }
}
