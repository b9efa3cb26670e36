//! HL7 v2 messages as SS-MIX2 stores them: ISO-2022-JP bytes, decoded to text *before* the
//! delimiters are split (JIS X 0208 codes contain `| ^ ~ \ &`), then a tolerant tokenizer.

mod iso2022jp;
mod message;

pub use iso2022jp::decode;
pub use message::{unescape, Delims, Message, Segment};

/// Why a file's bytes are not a message we can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A byte that ISO-2022-JP never has: the file is another encoding, binary, or encrypted.
    NotIso2022Jp {
        offset: usize,
        byte: u8,
    },
    Empty,
    NoMsh(String),
    BadDelimiters,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotIso2022Jp { offset, byte } => write!(
                f,
                "not ISO-2022-JP: 8-bit byte 0x{byte:02X} at offset {offset} (Shift_JIS, UTF-8, binary or encrypted bytes); have the EMR gateway write ISO-2022-JP"
            ),
            Error::Empty => write!(f, "the file holds no HL7 message"),
            Error::NoMsh(first) => write!(f, "the first segment is {first}, not MSH"),
            Error::BadDelimiters => write!(f, "MSH does not declare its five delimiters"),
        }
    }
}
