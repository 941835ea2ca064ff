//! Property tests over the token file parser and the bearer check: token files are
//! operator input and `authorization` headers come from anyone. Any input: no panic, and
//! only a listed token is ever accepted. `scripts/fuzz.sh` runs them with a million cases
//! each; CI runs the default 256.

use std::path::Path;

use proptest::prelude::*;
use tonic::service::Interceptor;
use umi_rpc::security::{ServerSecurity, Tokens};

const TOKEN: &str = "0123456789abcdef0";

fn token_file_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(":".to_string()),
        Just("\n".to_string()),
        Just("#".to_string()),
        Just("alice".to_string()),
        Just(TOKEN.to_string()),
        "[ -~]{0,24}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(format!("Bearer {TOKEN}")),
        "Bearer [ -~]{0,24}",
        "[ -~]{0,40}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn token_files_never_panic_and_accept_only_their_tokens(text in token_file_text(), guess in "[ -~]{0,24}") {
        if let Ok(tokens) = Tokens::parse(&text, Path::new("tokens")) {
            // A guess is accepted only if it is, whole, a token of the file.
            if tokens.holder(&guess).is_some() {
                let listed = text.lines().any(|l| {
                    let l = l.trim();
                    l == guess || l.split_once(':').is_some_and(|(_, t)| t.trim() == guess)
                });
                prop_assert!(listed, "accepted {:?} from {:?}", guess, text);
            }
        }
    }

    #[test]
    fn any_authorization_header_is_checked_without_panic(header in header_text()) {
        let tokens = Tokens::parse(&format!("alice:{TOKEN}"), Path::new("tokens")).unwrap();
        let mut check = ServerSecurity::new(None, Some(tokens)).unwrap().check_token();
        let mut request = tonic::Request::new(());
        let sent = match header.parse() {
            Ok(value) => {
                request.metadata_mut().insert("authorization", value);
                true
            }
            Err(_) => false,
        };
        let passed = check.call(request).is_ok();
        let right = sent && header.strip_prefix("Bearer ").is_some_and(|t| t.trim() == TOKEN);
        prop_assert_eq!(passed, right);
    }
}
