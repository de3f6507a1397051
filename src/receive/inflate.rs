//! Decompressing request bodies (gzip, deflate, zstd) in steps, each growth of the output paid
//! for before it is made, so that what a small body inflates to is counted against the intake
//! budget as it comes out, and a body that would inflate past its limit stops there.

use std::io::Read;

use bytes::Bytes;

use crate::pipeline::WriteError;

/// How much decompressed output is read (and its room taken) at a time.
const STEP: usize = 64 * 1024;

/// Why a body did not decompress.
#[derive(Debug)]
pub enum InflateError {
    /// It inflates to more than its limit.
    TooLarge(usize),
    /// An encoding otelephant does not take.
    Unsupported(String),
    /// Not valid data of its encoding.
    Corrupt(String),
    /// No room came for the next step (or the request would pass its memory limit).
    NoRoom(WriteError),
}

/// Decompresses `body` as `encoding` (a Content-Encoding or grpc-encoding) says, refusing to
/// produce more than `limit` bytes. `charge` is asked for each growth of the output buffer
/// before it is made.
///
/// # Errors
/// See [`InflateError`].
pub fn decompress(
    encoding: Option<&str>,
    body: Bytes,
    limit: usize,
    charge: &mut dyn FnMut(usize) -> Result<(), WriteError>,
) -> Result<Bytes, InflateError> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    let reader: Box<dyn Read + '_> = match encoding.as_deref() {
        None | Some("" | "identity") => {
            return if body.len() > limit { Err(InflateError::TooLarge(limit)) } else { Ok(body) };
        }
        Some("gzip" | "x-gzip") => Box::new(flate2::read::GzDecoder::new(&body[..])),
        // HTTP's deflate is the zlib format.
        Some("deflate") => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
        Some("zstd") => Box::new(
            zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| InflateError::Corrupt(format!("bad zstd body: {e}")))?,
        ),
        Some(other) => return Err(InflateError::Unsupported(other.to_owned())),
    };
    let mut reader = reader.take(limit as u64 + 1);
    let mut out: Vec<u8> = Vec::new();
    let corrupt = |e: std::io::Error| InflateError::Corrupt(format!("cannot decompress the body: {e}"));
    loop {
        if out.capacity() - out.len() < STEP {
            let grown = (out.capacity() * 2).max(out.len() + STEP).min(limit + 1).max(out.len() + 1);
            charge(grown - out.capacity()).map_err(InflateError::NoRoom)?;
            out.reserve_exact(grown - out.len());
        }
        let start = out.len();
        let step = (out.capacity() - start).min(STEP);
        out.resize(start + step, 0);
        let read = reader.read(&mut out[start..]).map_err(corrupt)?;
        out.truncate(start + read);
        if read == 0 {
            break;
        }
        if out.len() > limit {
            return Err(InflateError::TooLarge(limit));
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_paid_for_before_it_grows_and_stops_at_the_limit() {
        let plain = vec![7u8; 1 << 20];
        let zstd = Bytes::from(zstd::encode_all(&plain[..], 3).expect("zstd"));
        let mut charged = 0;
        let out = decompress(Some("zstd"), zstd.clone(), 2 << 20, &mut |n| {
            charged += n;
            Ok(())
        })
        .expect("inflates");
        assert_eq!(out.len(), plain.len());
        assert!(charged >= out.len() && charged <= 2 * out.len() + STEP, "{charged}");

        let refused = decompress(Some("zstd"), zstd.clone(), 100_000, &mut |_| Ok(()));
        assert!(matches!(refused, Err(InflateError::TooLarge(100_000))));
        // A charge that fails stops the inflating at once.
        let mut asked = 0;
        let stopped = decompress(Some("zstd"), zstd, 2 << 20, &mut |n| {
            asked += n;
            if asked > 300_000 {
                Err(WriteError::TooLarge(300_000))
            } else {
                Ok(())
            }
        });
        assert!(matches!(stopped, Err(InflateError::NoRoom(WriteError::TooLarge(_)))));
        assert!(matches!(
            decompress(Some("br"), Bytes::new(), 10, &mut |_| Ok(())),
            Err(InflateError::Unsupported(_))
        ));
    }
}
