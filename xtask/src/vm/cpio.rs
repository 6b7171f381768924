//! A minimal writer for the "newc" cpio format the kernel unpacks as an initramfs.

use std::io::Write;

pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    pub fn new() -> Self {
        Cpio { buf: Vec::new(), ino: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let name = name.trim_start_matches('/');
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            namesize,
            0
        );
        self.ino += 1;
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, data);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes());
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        // Segments are concatenated; keep each one 512-byte aligned like cpio(1) does.
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        self.buf
    }

    pub fn write_to(self, path: &std::path::Path) -> std::io::Result<()> {
        let data = self.finish();
        let mut f = std::fs::File::create(path)?;
        f.write_all(&data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::new();
        c.file("/init", 0o755, b"hi");
        let b = c.finish();
        assert_eq!(&b[..6], b"070701");
        // mode of the first entry
        assert_eq!(&b[14..22], b"000081ed");
        // name starts right after the 110-byte header
        assert_eq!(&b[110..115], b"init\0");
        // data is 4-byte aligned: 110 + 5 = 115 -> 116
        assert_eq!(&b[116..118], b"hi");
        assert_eq!(b.len() % 512, 0);
        assert!(b.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
