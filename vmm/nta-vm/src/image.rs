// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The arm64 Image header (Documentation/arch/arm64/booting.rst), read for the map layout,
//! which cannot use linux-loader: its loader copies the image into guest memory.

use std::fmt;

/// The header's `magic` at offset 56: "ARM\x64".
const MAGIC: u32 = 0x644d_5241;
pub const HEADER_LEN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Where the image goes, from a 2 MiB aligned base.
    pub text_offset: u64,
    /// How much memory the kernel needs from there, its BSS included.
    pub image_size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadImage {
    Short(usize),
    Magic(u32),
    BigEndian,
}

impl fmt::Display for BadImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadImage::Short(n) => write!(f, "{n} bytes is too short for an arm64 Image"),
            BadImage::Magic(m) => write!(
                f,
                "not an arm64 Image (magic {m:#010x}, expected {MAGIC:#010x}; a compressed \
                 Image.gz or a vmlinux ELF will not do)"
            ),
            BadImage::BigEndian => write!(f, "a big-endian kernel, which nta-vm does not boot"),
        }
    }
}

impl std::error::Error for BadImage {}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

/// Reads the header at the start of `bytes`; `file_len` is the whole file's size.
pub fn parse(bytes: &[u8], file_len: u64) -> Result<Header, BadImage> {
    if bytes.len() < HEADER_LEN || file_len < HEADER_LEN as u64 {
        return Err(BadImage::Short(bytes.len().min(file_len as usize)));
    }
    let magic = u32::from_le_bytes([bytes[56], bytes[57], bytes[58], bytes[59]]);
    if magic != MAGIC {
        return Err(BadImage::Magic(magic));
    }
    let (text_offset, image_size, flags) = (le64(bytes, 8), le64(bytes, 16), le64(bytes, 24));
    if flags & 1 != 0 {
        return Err(BadImage::BigEndian);
    }
    // booting.rst: an image_size of 0 is a kernel older than 3.17, with text_offset 0x80000
    // and an unknown size: assume the file and as much again.
    if image_size == 0 {
        return Ok(Header {
            text_offset: 0x8_0000,
            image_size: file_len * 2,
        });
    }
    Ok(Header {
        text_offset,
        image_size: image_size.max(file_len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(&MAGIC.to_le_bytes());
        h
    }

    #[test]
    fn reads_a_header() {
        let h = parse(&header(0, 0x140_0000, 0xa), 0x100_0000).unwrap();
        assert_eq!((h.text_offset, h.image_size), (0, 0x140_0000));
        let old = parse(&header(0, 0, 0), 0x10_0000).unwrap();
        assert_eq!((old.text_offset, old.image_size), (0x8_0000, 0x20_0000));
    }

    #[test]
    fn rejects_what_is_not_an_image() {
        assert_eq!(parse(&[0; 10], 10), Err(BadImage::Short(10)));
        let mut h = header(0, 1, 0);
        h[56] = 0x7f;
        assert!(matches!(parse(&h, 64), Err(BadImage::Magic(_))));
        assert_eq!(parse(&header(0, 1, 1), 64), Err(BadImage::BigEndian));
    }
}
