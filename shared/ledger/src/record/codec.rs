//! The canonical byte codec of records: a bounded big-endian writer and reader, and the metric-list
//! canonicality check both sides apply (layout in the parent module's docs).

use super::{Metric, RecordError, MAX_BYTES_LEN, MAX_LIST_LEN, MAX_STRING_LEN};

pub(super) fn check_metrics(m: &[Metric]) -> Result<(), RecordError> {
    for (i, metric) in m.iter().enumerate() {
        if metric.name.is_empty() {
            return Err(RecordError::Metrics(format!("metric {i} has an empty name")));
        }
        if i > 0 && m[i - 1].name.as_bytes() >= metric.name.as_bytes() {
            return Err(RecordError::Metrics(format!(
                "{:?} does not sort strictly after {:?}",
                metric.name,
                m[i - 1].name
            )));
        }
    }
    Ok(())
}

#[derive(Default)]
pub(super) struct Writer {
    pub(super) buf: Vec<u8>,
}

impl Writer {
    pub(super) fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub(super) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.raw(&v.to_be_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.raw(&v.to_be_bytes());
    }
    pub(super) fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    pub(super) fn len_prefix(&mut self, field: &'static str, len: usize, max: usize) -> Result<(), RecordError> {
        if len > max {
            return Err(RecordError::TooLong { field, len, max });
        }
        // `max` is far below u32::MAX, so the cast is exact.
        self.u32(len as u32);
        Ok(())
    }
    pub(super) fn string(&mut self, field: &'static str, s: &str) -> Result<(), RecordError> {
        self.len_prefix(field, s.len(), MAX_STRING_LEN)?;
        self.raw(s.as_bytes());
        Ok(())
    }
    pub(super) fn bytes(&mut self, field: &'static str, b: &[u8]) -> Result<(), RecordError> {
        self.len_prefix(field, b.len(), MAX_BYTES_LEN)?;
        self.raw(b);
        Ok(())
    }
    pub(super) fn count(&mut self, field: &'static str, n: usize) -> Result<(), RecordError> {
        self.len_prefix(field, n, MAX_LIST_LEN)
    }
    pub(super) fn metrics(&mut self, m: &[Metric]) -> Result<(), RecordError> {
        check_metrics(m)?;
        self.count("metrics", m.len())?;
        for metric in m {
            self.string("metric name", &metric.name)?;
            self.f64(metric.value);
        }
        Ok(())
    }
}

pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
}

impl Reader<'_> {
    pub(super) fn take(&mut self, field: &'static str, n: usize) -> Result<&[u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(super) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }
    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    pub(super) fn f64(&mut self, field: &'static str) -> Result<f64, RecordError> {
        Ok(f64::from_bits(self.u64(field)?))
    }
    pub(super) fn len(&mut self, field: &'static str, max: usize) -> Result<usize, RecordError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(RecordError::TooLong { field, len, max });
        }
        Ok(len)
    }
    pub(super) fn string(&mut self, field: &'static str) -> Result<String, RecordError> {
        let len = self.len(field, MAX_STRING_LEN)?;
        let b = self.take(field, len)?;
        String::from_utf8(b.to_vec()).map_err(|_| RecordError::Utf8(field))
    }
    pub(super) fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, RecordError> {
        let len = self.len(field, MAX_BYTES_LEN)?;
        Ok(self.take(field, len)?.to_vec())
    }
    pub(super) fn count(&mut self, field: &'static str) -> Result<usize, RecordError> {
        self.len(field, MAX_LIST_LEN)
    }
    pub(super) fn metrics(&mut self, field: &'static str) -> Result<Vec<Metric>, RecordError> {
        let n = self.count(field)?;
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let name = self.string("metric name")?;
            let value = self.f64("metric value")?;
            out.push(Metric { name, value });
        }
        check_metrics(&out)?;
        Ok(out)
    }
}
