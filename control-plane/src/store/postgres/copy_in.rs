//! PostgreSQL's binary `COPY` format, written: a header, one tuple per row (its field count,
//! then each field as a big-endian length and its bytes, -1 for NULL) and a trailer.
//! <https://www.postgresql.org/docs/15/sql-copy.html#id-1.9.3.55.9.4>

/// `PGCOPY\n\xff\r\n\0`, then flags (no OIDs) and the header extension's length, both 0.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// The bytes of one `COPY … FROM STDIN (FORMAT binary)`; fields must follow the column list's
/// order and types (`int2`, `int4`, `int8`, `float8`, `bool`, `text`).
pub(super) struct BinaryCopy {
    bytes: Vec<u8>,
}

impl BinaryCopy {
    pub(super) fn with_capacity(bytes: usize) -> Self {
        let mut out = Vec::with_capacity(bytes + HEADER.len() + TRAILER.len());
        out.extend_from_slice(HEADER);
        Self { bytes: out }
    }

    /// Starts a row of `fields` fields.
    pub(super) fn row(&mut self, fields: i16) -> &mut Self {
        self.bytes.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn field(&mut self, value: &[u8]) -> &mut Self {
        // A field longer than 2 GiB cannot be sent; records are bounded far below (the ingest
        // body is at most 16 MiB), so the length always fits.
        let len = i32::try_from(value.len()).unwrap_or(i32::MAX);
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(value);
        self
    }

    pub(super) fn int2(&mut self, v: i16) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    pub(super) fn int4(&mut self, v: i32) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    pub(super) fn int8(&mut self, v: i64) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    pub(super) fn float8(&mut self, v: f64) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    pub(super) fn bool(&mut self, v: bool) -> &mut Self {
        self.field(&[u8::from(v)])
    }

    pub(super) fn text(&mut self, v: &str) -> &mut Self {
        self.field(v.as_bytes())
    }

    pub(super) fn text_or_null(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.text(v),
            None => {
                self.bytes.extend_from_slice(&(-1i32).to_be_bytes());
                self
            }
        }
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&TRAILER);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_of_each_type_is_laid_out_as_postgres_reads_it() {
        let mut copy = BinaryCopy::with_capacity(0);
        copy.row(3).int2(7).text("ab").text_or_null(None);
        let bytes = copy.finish();
        let mut expected = HEADER.to_vec();
        expected.extend_from_slice(&[0, 3]); // three fields
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 7]); // int2 7
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']); // "ab"
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // NULL
        expected.extend_from_slice(&[0xff, 0xff]); // trailer
        assert_eq!(bytes, expected);
        assert_eq!(HEADER.len(), 19);
    }
}
