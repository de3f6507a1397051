//! PostgreSQL binary COPY encoding: a table's column list and a buffer of tuples encoded for
//! `COPY table (columns) FROM STDIN (FORMAT binary)`. Each tuple is an int16 field count, then
//! per field an int32 length (-1 for NULL) and the value in the type's binary send format, all
//! in network byte order. A stream is `HEADER`, any number of tuples, `TRAILER`; tuples are
//! self-contained, so buffers from many requests concatenate into one stream.

use bytes::{BufMut, BytesMut};

use super::meter;

/// Signature, flags (no OIDs) and header extension length.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// A field count of -1 ends the stream.
pub const TRAILER: &[u8] = &[0xff, 0xff];

const JSONB_VERSION: u8 = 1;
const INT8_OID: i32 = 20;
const FLOAT8_OID: i32 = 701;

/// A table as the COPY encoder sees it: the column list each tuple follows, in order.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    pub kind: TableKind,
}

/// What a table holds, and so how it is written and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Resources, scopes, metric series: keyed by a content hash in the first column, upserted
    /// before the records that reference them, garbage-collected when nothing does.
    Dimension,
    /// Records of one signal, in daily partitions by `partition_key`, kept as long as the
    /// signal's retention says.
    Records { partition_key: &'static str, signal: Signal },
    /// Counts of records (see `encode::rollups`), laid out and kept like the records they
    /// count: daily partitions by `partition_key`, the signal's retention.
    Rollup { partition_key: &'static str, signal: Signal },
    /// Rows read from one record each (see `encode::genai`): laid out and kept like those
    /// records, not counted as records themselves.
    Derived { partition_key: &'static str, signal: Signal },
    /// Marks written with the records for maintenance to take (see `encode::rollups`): a
    /// plain table, on Citus a local table of the coordinator.
    Queue,
}

/// The signal a record table belongs to, for its retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Logs,
    Metrics,
}

impl Table {
    /// The column daily partitions are made by; `None` for a dimension table.
    pub const fn partition_key(&self) -> Option<&'static str> {
        match self.kind {
            TableKind::Records { partition_key, .. }
            | TableKind::Rollup { partition_key, .. }
            | TableKind::Derived { partition_key, .. } => Some(partition_key),
            TableKind::Dimension | TableKind::Queue => None,
        }
    }

    /// `COPY name (columns) FROM STDIN (FORMAT binary)` into `target` (the table, or a
    /// staging table of the same shape).
    pub fn copy_statement(&self, target: &str) -> String {
        format!("COPY {target} ({}) FROM STDIN (FORMAT binary)", self.columns.join(", "))
    }
}

/// Encoded tuples for one table.
#[derive(Debug, Default)]
pub struct Rows {
    pub buf: BytesMut,
    pub count: usize,
}

/// Room left in a buffer below which it asks its request's meter before growing.
const HEADROOM: usize = 16 * 1024;
/// What a buffer may take before it asks at all: a request's first rows, and the throwaway
/// buffers of records already refused, cost no asking.
const UNMETERED: usize = 16 * 1024;

impl Rows {
    /// Starts a tuple of `table`; the caller writes exactly one field per column, in order.
    pub fn row(&mut self, table: &Table) -> Row<'_> {
        if self.buf.capacity() - self.buf.len() < HEADROOM && self.buf.capacity() >= UNMETERED {
            self.grow(0);
        }
        self.count += 1;
        let fields = table.columns.len();
        self.buf.put_i16(fields as i16);
        Row { buf: &mut self.buf, left: fields }
    }
}

impl Rows {
    /// Grows the buffer once the request's meter grants it (see [`super::meter`]); with no
    /// meter, leaves growing to the buffer. Once the meter refuses, the rows are thrown away as
    /// they come, so the buffer grows no more: the request is refused whole.
    #[cold]
    fn grow(&mut self, at_least: usize) {
        let grown = (self.buf.capacity() * 2).max(self.buf.len() + 4 * HEADROOM + at_least);
        match meter::ask(grown - self.buf.capacity()) {
            // Grown here either way, so that the next rows do not come back to ask.
            meter::Answer::Unmetered | meter::Answer::Granted => self.buf.reserve(grown - self.buf.len()),
            meter::Answer::Refused => self.buf.clear(),
        }
    }
}

/// Where a table's rows ended at some moment, to go back to (see [`Rows::undo`]).
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    len: usize,
    count: usize,
}

impl Rows {
    /// Where the rows end now.
    pub fn mark(&self) -> Mark {
        Mark { len: self.buf.len(), count: self.count }
    }

    /// Removes the rows written since `mark`: a record refused once its row is written (the
    /// writers check a record as they write it, in one pass).
    pub fn undo(&mut self, mark: Mark) {
        self.buf.truncate(mark.len);
        self.count = mark.count;
    }
}

impl Rows {
    /// Makes room for `additional` bytes of rows, asked of the request's meter like any growth.
    pub fn reserve(&mut self, additional: usize) {
        if self.buf.capacity() - self.buf.len() < additional {
            self.grow(additional);
        }
    }
}

/// One tuple being written. Dropping it checks, in debug builds, that every column got a field.
pub struct Row<'a> {
    buf: &'a mut BytesMut,
    left: usize,
}

impl Drop for Row<'_> {
    fn drop(&mut self) {
        debug_assert_eq!(self.left, 0, "a COPY tuple was left with missing fields");
    }
}

impl Row<'_> {
    fn field(&mut self, len: usize) -> &mut BytesMut {
        debug_assert!(self.left > 0, "a COPY tuple got more fields than columns");
        self.left -= 1;
        self.buf.put_i32(len as i32);
        self.buf
    }

    pub fn null(&mut self) {
        debug_assert!(self.left > 0, "a COPY tuple got more fields than columns");
        self.left -= 1;
        self.buf.put_i32(-1);
    }

    pub fn int8(&mut self, v: i64) {
        self.field(8).put_i64(v);
    }

    /// An unsigned 64-bit value in a bigint column, its bits reinterpreted.
    pub fn uint64(&mut self, v: u64) {
        self.int8(v as i64);
    }

    pub fn int4(&mut self, v: i32) {
        self.field(4).put_i32(v);
    }

    pub fn float8(&mut self, v: f64) {
        self.field(8).put_f64(v);
    }

    pub fn opt_float8(&mut self, v: Option<f64>) {
        match v {
            Some(v) => self.float8(v),
            None => self.null(),
        }
    }

    pub fn opt_int8(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.int8(v),
            None => self.null(),
        }
    }

    pub fn opt_int4(&mut self, v: Option<i32>) {
        match v {
            Some(v) => self.int4(v),
            None => self.null(),
        }
    }

    pub fn opt_text(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    pub fn bool(&mut self, v: bool) {
        self.field(1).put_u8(v as u8);
    }

    pub fn text(&mut self, v: &str) {
        self.field(v.len()).put_slice(v.as_bytes());
    }

    pub fn bytea(&mut self, v: &[u8]) {
        self.field(v.len()).put_slice(v);
    }

    /// An OTLP bytes field where empty means absent: NULL when empty.
    pub fn bytea_or_null(&mut self, v: &[u8]) {
        if v.is_empty() {
            self.null()
        } else {
            self.bytea(v)
        }
    }

    /// A jsonb field whose JSON text `write` appends to the buffer.
    pub fn jsonb(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let at = self.buf.len();
        self.field(0).put_u8(JSONB_VERSION);
        write(self.buf);
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// A jsonb field from JSON text that is already encoded.
    pub fn jsonb_text(&mut self, json: &[u8]) {
        self.field(json.len() + 1).put_u8(JSONB_VERSION);
        self.buf.put_slice(json);
    }

    pub fn int8_array(&mut self, values: impl ExactSizeIterator<Item = i64>) {
        let n = values.len();
        self.array_header(n, INT8_OID);
        for v in values {
            self.buf.put_i32(8);
            self.buf.put_i64(v);
        }
    }

    pub fn float8_array(&mut self, values: impl ExactSizeIterator<Item = f64>) {
        let n = values.len();
        self.array_header(n, FLOAT8_OID);
        for v in values {
            self.buf.put_i32(8);
            self.buf.put_f64(v);
        }
    }

    /// A one-dimensional array of `n` 8-byte elements: dimension count, has-nulls flag, element
    /// type, then (when not empty) the length and lower bound of the dimension.
    fn array_header(&mut self, n: usize, oid: i32) {
        let len = if n == 0 { 12 } else { 20 + n * 12 };
        let buf = self.field(len);
        buf.put_i32(if n == 0 { 0 } else { 1 });
        buf.put_i32(0);
        buf.put_i32(oid);
        if n > 0 {
            buf.put_i32(n as i32);
            buf.put_i32(1);
        }
    }
}
