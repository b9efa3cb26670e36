//! The wire decoders the hub runs on every batch an appliance posts, and the appliance on every
//! restore stream: nothing may panic or read past the input, a decoded batch encodes back to the
//! same bytes, and a segment's body never expands past the length it declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok((facility, segs)) = wire::decode_batch(data) {
        if facility.len() == 10 && facility.bytes().all(|b| b.is_ascii_digit()) {
            assert_eq!(
                wire::encode_batch(&facility, &segs),
                data,
                "a batch re-encodes to its bytes"
            );
        }
        for s in &segs {
            if let Ok(cs) = s.changeset() {
                assert_eq!(cs.len(), s.raw_len);
            }
        }
    }
    // A restore stream, frame by frame: each frame takes some of what is left and encodes back
    // to exactly the bytes it took.
    let mut rest = data;
    while let Ok(Some((frame, used))) = wire::Frame::decode(rest) {
        assert!(used > 0 && used <= rest.len());
        let mut out = Vec::new();
        frame.encode(&mut out);
        assert_eq!(out, &rest[..used], "a frame re-encodes to its bytes");
        rest = &rest[used..];
    }
});
