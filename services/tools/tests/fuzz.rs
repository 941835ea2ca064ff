//! Property tests over the local tools, which evaluate whatever a model writes: any
//! expression or tool input gives an answer or an error observation, never a panic or
//! a stack overflow. `scripts/fuzz.sh` runs a million cases each.

use proptest::prelude::*;
use umi_tools::local::{evaluate, LocalTools};

/// Arithmetic-looking text, deep nesting included.
fn expression() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[0-9]{1,4}",
        Just("(".to_string()),
        Just(")".to_string()),
        Just("-".to_string()),
        Just("+".to_string()),
        Just("*".to_string()),
        Just("/".to_string()),
        Just("^".to_string()),
        Just(".".to_string()),
        Just(" ".to_string()),
        (1usize..3000).prop_map(|n| "(".repeat(n)),
        (1usize..3000).prop_map(|n| "-".repeat(n)),
        (1usize..2000).prop_map(|n| "2^".repeat(n)),
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn the_calculator_never_panics(expr in expression()) {
        let _ = evaluate(&expr);
    }

    #[test]
    fn local_tools_answer_any_input(api in prop_oneof![Just("calculator"), Just("text_stats"), Just("days_between"), Just("other")], expr in expression(), raw in any::<String>()) {
        let input = serde_json::json!({"expression": expr, "text": expr, "start": raw, "end": expr}).to_string();
        let reply = LocalTools::answer(api, &input);
        prop_assert!(reply.error_text().is_empty() == reply.has_response());
        let _ = LocalTools::answer(api, &raw);
    }
}
