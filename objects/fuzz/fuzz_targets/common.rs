//! Shared by the decoder targets: decode `data` in one format at a request
//! path chosen by the first byte, with the core model, through every entry
//! point a peer reaches (a node, a composite, a timestamped series, a path
//! list). The targets only check that nothing panics, overflows the stack or
//! allocates without bound; libFuzzer's -rss_limit_mb and -max_len enforce
//! the last two.

use lwm2m_objects::{Codecs, ContentFormat, Path, Registry};

/// Paths at every depth, over objects the core model knows (single and
/// multiple resources, every value type) and one it does not.
const PATHS: [&str; 16] = [
    "/3", "/3/0", "/3/0/0", "/3/0/6", "/3/0/6/1", "/3/0/13", "/5/0/0", "/0/1", "/1", "/4/0/4",
    "/6/0/0", "/2/0/2/310", "/9/0", "/7/0/8", "/65/0", "/65/0/0/1",
];

pub fn decode_all(format: ContentFormat, data: &[u8]) {
    thread_local! {
        static CTX: (Codecs, Registry) = (Codecs::new(), Registry::with_core());
    }
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let path: Path = PATHS[sel as usize % PATHS.len()].parse().expect("constant paths are valid");
    CTX.with(|(codecs, model)| {
        let Ok(codec) = codecs.get(format.code()) else {
            return;
        };
        let _ = codec.decode(payload, &path, model);
        let _ = codec.decode_nodes(payload, None, model);
        let _ = codec.decode_nodes(payload, Some(&[path]), model);
        let _ = codec.decode_timestamped(payload, &path, model);
        let _ = codec.decode_paths(payload);
    });
}
