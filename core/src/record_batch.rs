//! A worker's batch of usage records as it crosses the shared queue to the usage service.
//!
//! Layout: the records' JSON joined by commas (so a run of records is spliced into the ingest
//! body `{"records":[...]}` with one copy), then a trailer: each record's end offset in the text
//! and the record count, all `u32` little-endian. The usage service keeps the bytes as they
//! arrived; it never scans or copies a record on its own (that was a scan for newlines and an
//! allocation per record on Envoy's main thread).

const U32: usize = 4;

/// Builds one batch on a worker.
pub struct RecordBatchWriter {
    text: Vec<u8>,
    ends: Vec<u32>,
    text_capacity: usize,
}

impl RecordBatchWriter {
    /// Room reserved for `records` records of about `record_bytes` each (the batch never
    /// reallocates while it fills in the usual case).
    pub fn new(records: usize, record_bytes: usize) -> RecordBatchWriter {
        let text_capacity = records * record_bytes;
        RecordBatchWriter {
            text: Vec::with_capacity(text_capacity + (records + 1) * U32),
            ends: Vec::with_capacity(records),
            text_capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends one record; `write` writes its JSON (one value, no trailing separator). A batch
    /// whose text would pass `u32::MAX` bytes refuses the record (`false`), and so does an
    /// empty record (no JSON value is empty; `RecordBatch::parse` refuses a batch holding one).
    pub fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        let before = self.text.len();
        if !self.ends.is_empty() {
            self.text.push(b',');
        }
        let start = self.text.len();
        write(&mut self.text);
        let written = self.text.len() > start;
        match u32::try_from(self.text.len()) {
            Ok(end) if written => {
                self.ends.push(end);
                true
            }
            _ => {
                self.text.truncate(before);
                false
            }
        }
    }

    /// The finished batch's bytes; the writer starts empty again with the same reservation.
    pub fn finish(&mut self) -> Vec<u8> {
        let count = self.ends.len();
        let mut bytes = std::mem::replace(
            &mut self.text,
            Vec::with_capacity(self.text_capacity + (count + 1) * U32),
        );
        bytes.reserve((count + 1) * U32);
        for end in self.ends.drain(..) {
            bytes.extend_from_slice(&end.to_le_bytes());
        }
        bytes.extend_from_slice(&(count as u32).to_le_bytes());
        bytes
    }
}

/// A batch as the usage service holds it, its trailer checked once on arrival.
#[derive(Debug)]
pub struct RecordBatch {
    bytes: Vec<u8>,
    /// Where the trailer (end offsets) starts, = the text's length.
    trailer: usize,
    count: usize,
}

impl RecordBatch {
    /// Checks the trailer: a count, increasing end offsets inside the text, a comma between
    /// consecutive records, the last one ending the text.
    pub fn parse(bytes: Vec<u8>) -> Result<RecordBatch, String> {
        let len = bytes.len();
        let count = read_u32(&bytes, len.wrapping_sub(U32))
            .ok_or_else(|| format!("record batch of {len} bytes has no trailer"))?
            as usize;
        let trailer = count
            .checked_add(1)
            .and_then(|n| n.checked_mul(U32))
            .and_then(|n| len.checked_sub(n))
            .ok_or_else(|| format!("record batch of {len} bytes cannot hold {count} records"))?;
        let batch = RecordBatch {
            bytes,
            trailer,
            count,
        };
        let mut start = 0;
        for i in 0..count {
            let end = batch.end(i);
            if end <= start || end > trailer {
                return Err(format!(
                    "record {i} of {count}: end offset {end} out of order"
                ));
            }
            if i + 1 < count && batch.bytes.get(end) != Some(&b',') {
                return Err(format!("record {i} of {count}: no separator after it"));
            }
            start = end + 1;
        }
        if count > 0 && batch.end(count - 1) != trailer {
            return Err(format!("record batch: text of {trailer} bytes not used up"));
        }
        Ok(batch)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn end(&self, i: usize) -> usize {
        read_u32(&self.bytes, self.trailer + i * U32).map_or(0, |e| e as usize)
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.end(i - 1) + 1
        }
    }

    /// Records `from..to` as comma-joined JSON (empty if the range is).
    pub fn records(&self, from: usize, to: usize) -> &[u8] {
        let to = to.min(self.count);
        if from >= to {
            return &[];
        }
        self.bytes
            .get(self.start(from)..self.end(to - 1))
            .unwrap_or_default()
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; U32] = bytes.get(at..at.checked_add(U32)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(records: &[&str]) -> Vec<u8> {
        let mut writer = RecordBatchWriter::new(4, 16);
        for r in records {
            assert!(writer.push(|out| out.extend_from_slice(r.as_bytes())));
        }
        assert_eq!(writer.len(), records.len());
        writer.finish()
    }

    #[test]
    fn records_come_back_as_comma_joined_runs() {
        let batch =
            RecordBatch::parse(batch_of(&[r#"{"n":0}"#, r#"{"n":11}"#, r#"{"n":2}"#])).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.records(0, 3), br#"{"n":0},{"n":11},{"n":2}"#);
        assert_eq!(batch.records(1, 2), br#"{"n":11}"#);
        assert_eq!(batch.records(2, 9), br#"{"n":2}"#);
        assert_eq!(batch.records(2, 2), b"");
    }

    #[test]
    fn writer_starts_over_after_finish() {
        let mut writer = RecordBatchWriter::new(2, 8);
        writer.push(|out| out.extend_from_slice(b"{}"));
        let first = writer.finish();
        assert!(writer.is_empty());
        writer.push(|out| out.extend_from_slice(b"[1]"));
        let second = RecordBatch::parse(writer.finish()).unwrap();
        assert_eq!(RecordBatch::parse(first).unwrap().records(0, 1), b"{}");
        assert_eq!(second.records(0, 1), b"[1]");
        let empty = RecordBatch::parse(writer.finish()).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn an_empty_record_is_refused_not_framed() {
        // Found by the record_batch fuzz target: the writer framed an empty record that
        // `parse` then refused, dropping the whole batch with it.
        let mut writer = RecordBatchWriter::new(2, 8);
        assert!(!writer.push(|_| {}));
        assert!(writer.push(|out| out.extend_from_slice(b"{}")));
        assert!(!writer.push(|_| {}));
        assert!(writer.push(|out| out.extend_from_slice(b"[]")));
        let batch = RecordBatch::parse(writer.finish()).unwrap();
        assert_eq!(batch.records(0, 2), b"{},[]");
    }

    #[test]
    fn damaged_batches_are_refused() {
        let good = batch_of(&["{}", "{}"]);
        assert!(RecordBatch::parse(good.clone()).is_ok());
        assert!(RecordBatch::parse(Vec::new()).is_err());
        assert!(RecordBatch::parse(b"{}".to_vec()).is_err());
        // Truncated text.
        assert!(RecordBatch::parse(good[1..].to_vec()).is_err());
        // A count larger than the batch.
        let mut big = good.clone();
        let n = big.len();
        big[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
        assert!(RecordBatch::parse(big).is_err());
        // Offsets out of order.
        let mut swapped = good.clone();
        swapped[5..9].copy_from_slice(&9u32.to_le_bytes());
        assert!(RecordBatch::parse(swapped).is_err());
        // No comma between records.
        let mut joined = good;
        joined[2] = b' ';
        assert!(RecordBatch::parse(joined).is_err());
    }
}
