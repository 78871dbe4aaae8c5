//! The C entry points with arbitrary bytes, as a careless or hostile PHP caller could pass them:
//! any bytes as policy text (either format), packet JSON, event JSON, snapshot and backend
//! name. No call may panic through the boundary (`PBXFW_ERR_PANIC` is a bug), and every object
//! and buffer handed out is freed.
#![no_main]

use std::ffi::c_char;
use std::ptr::null_mut;

use libfuzzer_sys::fuzz_target;
use pbxfw::*;

fn ok_or_clean(r: pbxfw_result, err: &mut *mut pbxfw_error) -> bool {
    assert_ne!(r, pbxfw_result::PBXFW_ERR_PANIC, "{:?}", unsafe {
        std::ffi::CStr::from_ptr(pbxfw_error_message(*err))
    });
    pbxfw_error_free(err);
    r == pbxfw_result::PBXFW_OK
}

fuzz_target!(|data: &[u8]| {
    // Split the input at NUL bytes: the policy, then the other arguments.
    let mut parts = data.split(|b| *b == 0);
    let policy_text = parts.next().unwrap_or_default();
    let packet = parts.next().unwrap_or_default();
    let event = parts.next().unwrap_or_default();
    let backend = parts.next().unwrap_or_default();
    let ptr = |b: &[u8]| b.as_ptr().cast::<c_char>();
    let mut err: *mut pbxfw_error = null_mut();
    // Any integer: values that are no pbxfw_format must be refused, never undefined.
    let format = match data.first() {
        Some(b'{') => pbxfw_format::PBXFW_FORMAT_JSON as u32,
        Some(b'\x00') => u32::from(data.get(1).copied().unwrap_or(7)),
        _ => pbxfw_format::PBXFW_FORMAT_TOML as u32,
    };
    let mut policy: *mut pbxfw_policy = null_mut();
    let r = pbxfw_policy_parse(ptr(policy_text), policy_text.len(), format, &mut policy, &mut err);
    if !ok_or_clean(r, &mut err) {
        assert!(policy.is_null(), "out written on failure");
        return;
    }
    let mut buf = pbxfw_buf { ptr: null_mut(), len: 0 };
    for b in [&b"nft"[..], b"iptables", b"ir", backend] {
        let r = pbxfw_policy_compile(policy, ptr(b), b.len(), &mut buf, &mut err);
        ok_or_clean(r, &mut err);
        pbxfw_buf_free(&mut buf);
    }
    let r = pbxfw_policy_explain(policy, ptr(packet), packet.len(), &mut buf, &mut err);
    ok_or_clean(r, &mut err);
    pbxfw_buf_free(&mut buf);
    let mut machine: *mut pbxfw_responsive = null_mut();
    let r = pbxfw_responsive_new(policy, &mut machine, &mut err);
    assert!(ok_or_clean(r, &mut err));
    let r = pbxfw_responsive_on_event(machine, ptr(event), event.len(), 1_795_000_000, &mut buf, &mut err);
    ok_or_clean(r, &mut err);
    pbxfw_buf_free(&mut buf);
    let mut restored: *mut pbxfw_responsive = null_mut();
    let r = pbxfw_responsive_restore(policy, ptr(event), event.len(), &mut restored, &mut err);
    ok_or_clean(r, &mut err);
    pbxfw_responsive_free(&mut restored);
    pbxfw_responsive_free(&mut machine);
    pbxfw_policy_free(&mut policy);
});
