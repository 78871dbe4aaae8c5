//! The control socket's request parser (`pbxfw_runtime::control::wire::parse_request`), the first
//! thing a caller's bytes meet. Nothing may panic; a request read is one that encodes back to
//! the same call; an id is echoed only when it is null, a number or a short string; and a
//! refusal is always an answer a client can read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbxfw_runtime::control::wire::{encode_request, parse_request, Response, MAX_ID};
use pbxfw_runtime::Error;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(req) => {
            assert!(
                req.id.is_null()
                    || req.id.is_number()
                    || req.id.as_str().is_some_and(|s| s.len() <= MAX_ID)
            );
            let again = parse_request(encode_request(&req.id, &req.call).as_bytes())
                .expect("an encoded request reads back");
            assert_eq!(again.call, req.call);
        }
        Err(bad) => {
            let answer = Response::failed(bad.id, &Error::Usage(bad.error));
            let line = serde_json::to_string(&answer).unwrap();
            assert!(!line.contains('\n'));
            let back: Response = serde_json::from_str(&line).unwrap();
            assert_eq!(back.error.unwrap().code, 5);
        }
    }
});
