//! What a picture file says it is before anything decodes it: its format and its size in
//! pixels, read from the header (PNG, JPEG, GIF, BMP, WebP). The page refuses a file past
//! MAX_PICTURE_BYTES, or one whose header declares more than MAX_PICTURE_SIDE a side or
//! MAX_PICTURE_PIXELS in all, before the browser decodes it at full size (a 20,000 x 20,000
//! image is 1.6 GB of pixels, and the network needs 32 x 32).

/// The largest picture file read.
pub const MAX_PICTURE_BYTES: u64 = 64 * 1024 * 1024;
/// The largest side and the most pixels a picture may declare (a 48-megapixel phone photo,
/// 8,000 x 6,000, passes).
pub const MAX_PICTURE_SIDE: u32 = 16_384;
pub const MAX_PICTURE_PIXELS: u64 = 50_000_000;
/// Bytes of the file's start that hold the size for every format read here (a JPEG's SOF
/// marker may follow metadata; 256 KiB covers camera EXIF blocks with thumbnails).
pub const HEADER_BYTES: usize = 256 * 1024;

/// The format's name and the declared (width, height), or an error saying what is wrong.
pub fn declared_size(head: &[u8]) -> Result<(&'static str, u32, u32), String> {
    let be16 = |i: usize| head.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]) as u32);
    let le16 = |i: usize| head.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32);
    let be32 = |i: usize| head.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let le32 = |i: usize| head.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let le24 = |i: usize| head.get(i..i + 3).map(|b| b[0] as u32 | (b[1] as u32) << 8 | (b[2] as u32) << 16);
    let cut = |format: &'static str| format!("a {format} file cut short before its size");
    let (format, w, h) = if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        ("PNG", be32(16).ok_or_else(|| cut("PNG"))?, be32(20).ok_or_else(|| cut("PNG"))?)
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        ("GIF", le16(6).ok_or_else(|| cut("GIF"))?, le16(8).ok_or_else(|| cut("GIF"))?)
    } else if head.starts_with(b"BM") {
        let h = le32(22).ok_or_else(|| cut("BMP"))? as i32;
        ("BMP", le32(18).ok_or_else(|| cut("BMP"))?, h.unsigned_abs())
    } else if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        match head.get(12..16) {
            Some(b"VP8 ") => ("WebP", le16(26).ok_or_else(|| cut("WebP"))? & 0x3fff, le16(28).ok_or_else(|| cut("WebP"))? & 0x3fff),
            Some(b"VP8L") => {
                let bits = le32(21).ok_or_else(|| cut("WebP"))?;
                ("WebP", (bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1)
            }
            Some(b"VP8X") => ("WebP", le24(24).ok_or_else(|| cut("WebP"))? + 1, le24(27).ok_or_else(|| cut("WebP"))? + 1),
            _ => return Err("a WebP file of a kind this page does not read".into()),
        }
    } else if head.starts_with(&[0xff, 0xd8]) {
        jpeg_size(head, be16)?
    } else {
        return Err("not a PNG, JPEG, GIF, BMP or WebP picture".into());
    };
    Ok((format, w, h))
}

/// A JPEG's size from its first start-of-frame marker, walking the segments from the start.
fn jpeg_size(head: &[u8], be16: impl Fn(usize) -> Option<u32>) -> Result<(&'static str, u32, u32), String> {
    let mut at = 2;
    loop {
        // fill bytes 0xff may precede a marker
        while head.get(at) == Some(&0xff) && head.get(at + 1) == Some(&0xff) {
            at += 1;
        }
        let (Some(&0xff), Some(&marker)) = (head.get(at), head.get(at + 1)) else {
            return Err("a JPEG file whose size is not in its first 256 KiB, or a damaged one".into());
        };
        // SOF0-SOF15, but not DHT (c4), JPG (c8) or DAC (cc): height then width
        if (0xc0..=0xcf).contains(&marker) && ![0xc4, 0xc8, 0xcc].contains(&marker) {
            let (h, w) = (be16(at + 5), be16(at + 7));
            return match (w, h) {
                (Some(w), Some(h)) => Ok(("JPEG", w, h)),
                _ => Err("a JPEG file cut short before its size".into()),
            };
        }
        // markers without a length (RSTn, SOI, TEM), else skip the segment
        at += match marker {
            0xd0..=0xd8 | 0x01 => 2,
            _ => 2 + be16(at + 2).ok_or("a JPEG file cut short in a segment header")? as usize,
        };
    }
}

/// Whether a picture of this file size and declared size may be decoded; the error names it.
pub fn check(name: &str, file_bytes: u64, head: &[u8]) -> Result<(), String> {
    if file_bytes > MAX_PICTURE_BYTES {
        return Err(format!("{name}: {file_bytes} bytes, more than the {MAX_PICTURE_BYTES} of a picture this page reads"));
    }
    let (format, w, h) = declared_size(head).map_err(|e| format!("{name}: {e}"))?;
    if w == 0 || h == 0 {
        return Err(format!("{name}: a {format} of {w} x {h} pixels: empty"));
    }
    if w > MAX_PICTURE_SIDE || h > MAX_PICTURE_SIDE || w as u64 * h as u64 > MAX_PICTURE_PIXELS {
        return Err(format!(
            "{name}: a {format} of {w} x {h} pixels, more than this page decodes ({MAX_PICTURE_SIDE} a side, {} megapixels; the network sees 32 x 32)",
            MAX_PICTURE_PIXELS / 1_000_000
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend(w.to_be_bytes());
        b.extend(h.to_be_bytes());
        b.extend([8, 6, 0, 0, 0]);
        b
    }

    #[test]
    fn each_format_declares_its_size() {
        assert_eq!(declared_size(&png(640, 480)), Ok(("PNG", 640, 480)));
        let mut gif = b"GIF89a".to_vec();
        gif.extend([0x20, 0x03, 0x58, 0x02]);
        assert_eq!(declared_size(&gif), Ok(("GIF", 800, 600)));
        let mut bmp = vec![b'B', b'M'];
        bmp.resize(18, 0);
        bmp.extend(100i32.to_le_bytes());
        bmp.extend((-50i32).to_le_bytes());
        assert_eq!(declared_size(&bmp), Ok(("BMP", 100, 50)));
        // JPEG: SOI, an APP0 segment of 16 bytes, then SOF0 with height 480, width 640
        let mut jpg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10];
        jpg.extend([0; 14]);
        jpg.extend([0xff, 0xc0, 0x00, 0x11, 0x08, 0x01, 0xe0, 0x02, 0x80, 0x03]);
        assert_eq!(declared_size(&jpg), Ok(("JPEG", 640, 480)));
        // WebP, lossless: 14-bit width-1 and height-1
        let mut webp = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        webp.extend(((99u32) | (49u32 << 14)).to_le_bytes());
        assert_eq!(declared_size(&webp), Ok(("WebP", 100, 50)));
        let mut x = b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0\0\0\0\0".to_vec();
        x.extend([0x1f, 0x4e, 0x00, 0x1f, 0x4e, 0x00]); // 20000 x 20000
        assert_eq!(declared_size(&x), Ok(("WebP", 20000, 20000)));
    }

    #[test]
    fn a_huge_a_cut_or_an_unknown_picture_is_refused_by_its_header() {
        assert_eq!(check("ok.png", 1000, &png(4032, 3024)), Ok(()));
        let e = check("huge.png", 1000, &png(20000, 20000)).unwrap_err();
        assert!(e.contains("huge.png: a PNG of 20000 x 20000 pixels, more than this page decodes"), "{e}");
        assert!(check("wide.png", 1000, &png(20000, 10)).unwrap_err().contains("20000 x 10"));
        assert!(check("many.png", 1000, &png(8000, 8000)).unwrap_err().contains("8000 x 8000"), "64 MP, past 50");
        assert!(check("empty.png", 1000, &png(0, 10)).unwrap_err().contains("empty"));
        assert!(check("big.png", MAX_PICTURE_BYTES + 1, &png(10, 10)).unwrap_err().contains("more than the 67108864"));
        assert!(check("cut.png", 10, &png(10, 10)[..18]).unwrap_err().contains("cut short"));
        assert!(check("x.svg", 10, b"<svg xmlns=").unwrap_err().contains("not a PNG, JPEG, GIF, BMP or WebP"));
        // a JPEG with no frame marker in its header, and one that loops on zero-length segments
        assert!(check("a.jpg", 10, &[0xff, 0xd8, 0xff, 0xe1, 0x00, 0x02]).is_err());
        assert!(check("b.jpg", 10, &[0xff, 0xd8, 0xff, 0xe1, 0x00, 0x00, 0xff, 0xe1, 0x00, 0x00]).is_err());
    }
}
