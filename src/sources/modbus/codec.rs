//! Decoding (and, for the simulator, encoding) of Modbus register contents: integer,
//! float, bool and string values under the four byte/word orders, then
//! `raw * scale + offset`.
//!
//! Byte and word orders are named after where the bytes of the big-endian value end
//! up on the wire. For 32-bit values `A B C D`:
//!
//! | order | register 0 | register 1 | meaning                                   |
//! |-------|------------|------------|-------------------------------------------|
//! | ABCD  | `A B`      | `C D`      | big-endian words, big-endian bytes        |
//! | BADC  | `B A`      | `D C`      | bytes swapped inside each word            |
//! | CDAB  | `C D`      | `A B`      | word order reversed ("word-swapped float") |
//! | DCBA  | `D C`      | `B A`      | fully little-endian                       |
//!
//! 64-bit values `A B C D E F G H` extend the same two independent rules: BADC swaps
//! the bytes inside each of the four words (`BA DC FE HG`), CDAB reverses the order of
//! the four words (`GH EF CD AB`), DCBA does both (`HG FE DC BA`).
//! One-register values (u16, i16, bool) ignore the order, as profile validation says.
//! Strings are two ASCII characters per register, high byte first, whatever the
//! order; trailing NULs and spaces are trimmed.
//!
//! u64/i64 values become f64 and lose precision above 2^53; that is fine for the
//! counters and totals sensors expose.
//!
//! Pure functions only: no I/O, no knowledge of requests or devices.

use crate::profiles::{DataType, WordOrder};

/// A decoded value before it becomes a [`crate::sources::Value`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Number(f64),
    Bool(bool),
    Text(String),
}

impl Decoded {
    /// The value as a number (bools are 0/1); `None` for text.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Decoded::Number(v) => Some(*v),
            Decoded::Bool(b) => Some(f64::from(u8::from(*b))),
            Decoded::Text(_) => None,
        }
    }
}

/// Why registers could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("{ty} needs {need} registers, got {got}")]
    TooFewRegisters {
        ty: &'static str,
        need: usize,
        got: usize,
    },
}

/// Puts the words of a multi-register value into big-endian order (ABCD) in place.
fn normalize(words: &mut [u16], order: WordOrder) {
    if matches!(order, WordOrder::BADC | WordOrder::DCBA) {
        for w in words.iter_mut() {
            *w = w.swap_bytes();
        }
    }
    if matches!(order, WordOrder::CDAB | WordOrder::DCBA) {
        words.reverse();
    }
}

/// The big-endian integer made of `n` (2 or 4) registers under `order`.
fn combine(regs: &[u16], n: usize, order: WordOrder) -> u64 {
    let mut w = [0u16; 4];
    w[..n].copy_from_slice(&regs[..n]);
    normalize(&mut w[..n], order);
    w[..n]
        .iter()
        .fold(0u64, |acc, x| (acc << 16) | u64::from(*x))
}

/// Decodes one value of type `ty` from the start of `regs`. `bit` selects one bit of
/// a register for `bool` (none: any non-zero register is true).
pub fn decode(
    regs: &[u16],
    ty: DataType,
    order: WordOrder,
    bit: Option<u8>,
) -> Result<Decoded, CodecError> {
    let need = match ty {
        DataType::String => 1,
        _ => usize::from(ty.registers().unwrap_or(1)),
    };
    if regs.len() < need {
        return Err(CodecError::TooFewRegisters {
            ty: ty.as_str(),
            need,
            got: regs.len(),
        });
    }
    Ok(match ty {
        DataType::U16 => Decoded::Number(f64::from(regs[0])),
        DataType::I16 => Decoded::Number(f64::from(regs[0] as i16)),
        DataType::U32 => Decoded::Number(combine(regs, 2, order) as u32 as f64),
        DataType::I32 => Decoded::Number(f64::from(combine(regs, 2, order) as u32 as i32)),
        DataType::F32 => Decoded::Number(f64::from(f32::from_bits(combine(regs, 2, order) as u32))),
        DataType::U64 => Decoded::Number(combine(regs, 4, order) as f64),
        DataType::I64 => Decoded::Number(combine(regs, 4, order) as i64 as f64),
        DataType::F64 => Decoded::Number(f64::from_bits(combine(regs, 4, order))),
        DataType::Bool => Decoded::Bool(match bit {
            Some(b) if b < 16 => (regs[0] >> b) & 1 == 1,
            Some(_) => false,
            None => regs[0] != 0,
        }),
        DataType::String => Decoded::Text(decode_string(regs)),
    })
}

/// Two ASCII characters per register, high byte first; trailing NULs and spaces
/// trimmed; bytes that are not printable ASCII become `?`.
pub fn decode_string(regs: &[u16]) -> String {
    let s: String = regs
        .iter()
        .flat_map(|r| r.to_be_bytes())
        .map(|b| match b {
            0 => '\0',
            0x20..=0x7e => char::from(b),
            _ => '?',
        })
        .collect();
    s.trim_end_matches(['\0', ' ']).to_string()
}

/// `raw * scale + offset`.
pub fn scaled(raw: f64, scale: f64, offset: f64) -> f64 {
    raw * scale + offset
}

/// Encodes a number as `ty` under `order` (the inverse of [`decode`]); integers are
/// rounded and saturated. Used by the simulator and the tests' round trips.
pub fn encode(value: f64, ty: DataType, order: WordOrder) -> Vec<u16> {
    let be: u64 = match ty {
        DataType::U16 => return vec![sat(value, 0.0, f64::from(u16::MAX)) as u16],
        DataType::I16 => {
            return vec![sat(value, f64::from(i16::MIN), f64::from(i16::MAX)) as i16 as u16]
        }
        DataType::Bool => return vec![u16::from(value != 0.0)],
        DataType::String => return Vec::new(),
        DataType::U32 => u64::from(sat(value, 0.0, f64::from(u32::MAX)) as u32),
        DataType::I32 => {
            u64::from(sat(value, f64::from(i32::MIN), f64::from(i32::MAX)) as i32 as u32)
        }
        DataType::F32 => u64::from((value as f32).to_bits()),
        DataType::U64 => value.round().max(0.0) as u64,
        DataType::I64 => value.round() as i64 as u64,
        DataType::F64 => value.to_bits(),
    };
    let n = usize::from(ty.registers().unwrap_or(1));
    let mut words: Vec<u16> = (0..n).map(|i| (be >> (16 * (n - 1 - i))) as u16).collect();
    // normalize() is its own inverse for each of the four orders.
    normalize(&mut words, order);
    words
}

fn sat(v: f64, lo: f64, hi: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.round().clamp(lo, hi)
    }
}

/// Encodes text as two ASCII characters per register, padded with NULs to `count`.
pub fn encode_string(s: &str, count: usize) -> Vec<u16> {
    let mut bytes: Vec<u8> = s.bytes().take(count * 2).collect();
    bytes.resize(count * 2, 0);
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;
    use WordOrder::*;

    /// Registers of one value as they appear on the wire under ABCD, BADC, CDAB and
    /// DCBA, written out by hand from the big-endian bytes (computed independently
    /// with Python's `struct.pack('>f', ...)` etc.), never by calling `encode`.
    struct Vector {
        ty: DataType,
        value: f64,
        abcd: &'static [u16],
        badc: &'static [u16],
        cdab: &'static [u16],
        dcba: &'static [u16],
    }

    const VECTORS: &[Vector] = &[
        // 123.456f32 = 42 F6 E9 79
        Vector {
            ty: F32,
            value: 123.456_f32 as f64,
            abcd: &[0x42F6, 0xE979],
            badc: &[0xF642, 0x79E9],
            cdab: &[0xE979, 0x42F6],
            dcba: &[0x79E9, 0xF642],
        },
        // -0.5f32 = BF 00 00 00
        Vector {
            ty: F32,
            value: -0.5,
            abcd: &[0xBF00, 0x0000],
            badc: &[0x00BF, 0x0000],
            cdab: &[0x0000, 0xBF00],
            dcba: &[0x0000, 0x00BF],
        },
        // -123456789i32 = F8 A4 32 EB
        Vector {
            ty: I32,
            value: -123_456_789.0,
            abcd: &[0xF8A4, 0x32EB],
            badc: &[0xA4F8, 0xEB32],
            cdab: &[0x32EB, 0xF8A4],
            dcba: &[0xEB32, 0xA4F8],
        },
        // 3000000000u32 = B2 D0 5E 00
        Vector {
            ty: U32,
            value: 3_000_000_000.0,
            abcd: &[0xB2D0, 0x5E00],
            badc: &[0xD0B2, 0x005E],
            cdab: &[0x5E00, 0xB2D0],
            dcba: &[0x005E, 0xD0B2],
        },
        // 1234.5678f64 = 40 93 4A 45 6D 5C FA AD
        Vector {
            ty: F64,
            value: 1234.5678,
            abcd: &[0x4093, 0x4A45, 0x6D5C, 0xFAAD],
            badc: &[0x9340, 0x454A, 0x5C6D, 0xADFA],
            cdab: &[0xFAAD, 0x6D5C, 0x4A45, 0x4093],
            dcba: &[0xADFA, 0x5C6D, 0x454A, 0x9340],
        },
        // -1234567890123i64 = FF FF FE E0 8E 04 FB 35
        Vector {
            ty: I64,
            value: -1_234_567_890_123.0,
            abcd: &[0xFFFF, 0xFEE0, 0x8E04, 0xFB35],
            badc: &[0xFFFF, 0xE0FE, 0x048E, 0x35FB],
            cdab: &[0xFB35, 0x8E04, 0xFEE0, 0xFFFF],
            dcba: &[0x35FB, 0x048E, 0xE0FE, 0xFFFF],
        },
        // 0x0123456789ABCDEF u64 = 81985529216486895; above 2^53, so compared after
        // the same rounding to f64 that decoding does (and not round-tripped).
        Vector {
            ty: U64,
            value: 81_985_529_216_486_895_u64 as f64,
            abcd: &[0x0123, 0x4567, 0x89AB, 0xCDEF],
            badc: &[0x2301, 0x6745, 0xAB89, 0xEFCD],
            cdab: &[0xCDEF, 0x89AB, 0x4567, 0x0123],
            dcba: &[0xEFCD, 0xAB89, 0x6745, 0x2301],
        },
        // One-register types ignore the order.
        Vector {
            ty: I16,
            value: -2.0,
            abcd: &[0xFFFE],
            badc: &[0xFFFE],
            cdab: &[0xFFFE],
            dcba: &[0xFFFE],
        },
        Vector {
            ty: U16,
            value: 54321.0,
            abcd: &[0xD431],
            badc: &[0xD431],
            cdab: &[0xD431],
            dcba: &[0xD431],
        },
    ];

    #[test]
    fn every_type_decodes_under_every_order() {
        for v in VECTORS {
            for (order, regs) in [
                (ABCD, v.abcd),
                (BADC, v.badc),
                (CDAB, v.cdab),
                (DCBA, v.dcba),
            ] {
                let got = decode(regs, v.ty, order, None).unwrap();
                assert_eq!(
                    got,
                    Decoded::Number(v.value),
                    "{} under {}",
                    v.ty.as_str(),
                    order.as_str()
                );
            }
        }
    }

    #[test]
    fn encode_inverts_decode_for_the_vectors() {
        for v in VECTORS {
            for (order, regs) in [
                (ABCD, v.abcd),
                (BADC, v.badc),
                (CDAB, v.cdab),
                (DCBA, v.dcba),
            ] {
                if v.ty.registers() == Some(1) || v.ty == U64 {
                    continue;
                }
                assert_eq!(
                    encode(v.value, v.ty, order),
                    regs,
                    "{} {}",
                    v.ty.as_str(),
                    order.as_str()
                );
            }
        }
    }

    #[test]
    fn wrong_order_gives_a_different_value() {
        // A word-swapped float read as ABCD is garbage, which is what --order all shows.
        let got = decode(&[0xE979, 0x42F6], F32, ABCD, None).unwrap();
        assert_ne!(got, Decoded::Number(123.456_f32 as f64));
    }

    #[test]
    fn bools_from_bits_of_a_register() {
        assert_eq!(
            decode(&[0b1000_0000_0000_0101], Bool, ABCD, Some(0)).unwrap(),
            Decoded::Bool(true)
        );
        assert_eq!(
            decode(&[0b1000_0000_0000_0101], Bool, ABCD, Some(1)).unwrap(),
            Decoded::Bool(false)
        );
        assert_eq!(
            decode(&[0b1000_0000_0000_0101], Bool, ABCD, Some(15)).unwrap(),
            Decoded::Bool(true)
        );
        assert_eq!(
            decode(&[0], Bool, ABCD, None).unwrap(),
            Decoded::Bool(false)
        );
        assert_eq!(decode(&[7], Bool, ABCD, None).unwrap(), Decoded::Bool(true));
    }

    #[test]
    fn strings_high_byte_first_trimmed() {
        // "VT-420" + NUL padding: 'V'=0x56 'T'=0x54 '-'=0x2D '4'=0x34 '2'=0x32 '0'=0x30
        let regs = [0x5654, 0x2D34, 0x3230, 0x0000, 0x0000];
        assert_eq!(
            decode(&regs, String, ABCD, None).unwrap(),
            Decoded::Text("VT-420".into())
        );
        // Space padding and an odd length: "AB C" then spaces.
        let regs = [0x4142, 0x2043, 0x2020];
        assert_eq!(decode_string(&regs), "AB C");
        // Non-ASCII bytes are shown, not dropped.
        assert_eq!(decode_string(&[0x41FF]), "A?");
        assert_eq!(
            encode_string("VT-420", 5),
            vec![0x5654, 0x2D34, 0x3230, 0, 0]
        );
    }

    #[test]
    fn too_few_registers_is_an_error_not_a_panic() {
        assert_eq!(
            decode(&[1], F32, ABCD, None),
            Err(CodecError::TooFewRegisters {
                ty: "f32",
                need: 2,
                got: 1
            })
        );
        assert!(decode(&[], U16, ABCD, None).is_err());
        assert!(decode(&[1, 2, 3], F64, CDAB, None).is_err());
    }

    #[test]
    fn scale_and_offset() {
        // A temperature in 0.1 °C with an offset: raw 253 -> 25.3 - 10.
        assert!((scaled(253.0, 0.1, -10.0) - 15.3).abs() < 1e-9);
        let raw = decode(&[0xFF9C], I16, ABCD, None)
            .unwrap()
            .as_f64()
            .unwrap();
        assert_eq!(raw, -100.0);
        assert!((scaled(raw, 0.1, 0.0) + 10.0).abs() < 1e-9);
    }

    #[test]
    fn encode_saturates_integers() {
        assert_eq!(encode(70000.0, U16, ABCD), vec![0xFFFF]);
        assert_eq!(encode(-40000.0, I16, ABCD), vec![0x8000]);
        assert_eq!(encode(f64::NAN, I16, ABCD), vec![0]);
        assert_eq!(encode(-1.0, U32, ABCD), vec![0, 0]);
    }
}
