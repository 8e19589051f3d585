//! The AudioSocket decoder against TCP as it is: a stream of messages delivered in arbitrary
//! pieces (a header split from its payload, several messages in one read, one byte at a
//! time) decodes to the same messages as the stream read whole, and a connection ending in
//! the middle of a message leaves exactly that message's bytes buffered (what the client
//! reports as `AudioSocketItem::Closed::truncated_bytes`).

use ari_proto::media::audiosocket::{Decoder, Message, Rate};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (0usize..9, proptest::collection::vec(any::<u8>(), 0..700)).prop_map(|(r, data)| {
            let rate = Rate::from_kind(0x10 + r as u8).unwrap_or(Rate::Slin8);
            Message::Audio {
                rate,
                data: Bytes::from(data),
            }
        }),
        prop::sample::select(b"0123456789*#ABCD".to_vec()).prop_map(Message::Dtmf),
        any::<[u8; 16]>().prop_map(Message::Uuid),
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(|e| Message::Error(Bytes::from(e))),
        Just(Message::Hangup),
    ]
}

/// Decodes `wire` pushed in pieces of the given sizes (cycled), every whole message as soon
/// as it is complete.
fn decode_in_pieces(wire: &[u8], sizes: &[usize]) -> (Vec<Message>, usize) {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    let mut rest = wire;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        decoder.push(&rest[..n]);
        rest = &rest[n..];
        while let Some(m) = decoder.next_message().expect("valid messages") {
            out.push(m);
        }
    }
    (out, decoder.buffered())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_split_of_the_stream_decodes_the_same_messages(
        messages in proptest::collection::vec(message(), 0..12),
        sizes in proptest::collection::vec(1usize..800, 1..20),
        cut_into_last in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        for m in &messages {
            m.encode(&mut wire).expect("encodes");
        }
        let (decoded, left) = decode_in_pieces(&wire, &sizes);
        prop_assert_eq!(&decoded, &messages);
        prop_assert_eq!(left, 0);

        // The connection ends inside one more message: everything before it decodes, and
        // the bytes of the cut-off message are exactly what is left buffered.
        let extra = Message::Audio { rate: Rate::Slin8, data: Bytes::from(vec![9u8; 320]) }
            .to_bytes()
            .expect("encodes");
        let cut = cut_into_last.index(extra.len() - 1) + 1; // 1..len: never whole
        let mut truncated = wire.to_vec();
        truncated.extend_from_slice(&extra[..cut]);
        let (decoded, left) = decode_in_pieces(&truncated, &sizes);
        prop_assert_eq!(&decoded, &messages);
        prop_assert_eq!(left, cut);
    }
}
