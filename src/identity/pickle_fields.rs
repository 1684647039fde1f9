//! Reading the top-level dict of a pickled Flask-Session value, and nothing else.
//!
//! Flask-Session 0.4 – 0.6 stores `pickle.dumps(dict(session), protocol=4)` (5 on Python 3.14).
//! sting-proxy only needs a few string fields of that dict. A general pickle decoder (we used
//! `serde-pickle`) materialises the whole object graph recursively, so a ~40 KB value holding
//! 20,000 nested lists overflows the stack and aborts the process. Values come from Redis, which
//! we trust only so far, so this module is a small stack machine in the shape of CPython's
//! unpickler that keeps only what the answer needs:
//!
//! - Nothing is resolved, imported or called. Every opcode that would build an object (`GLOBAL`,
//!   `STACK_GLOBAL`, `REDUCE`, `NEWOBJ`, `BUILD`, `INST`, `OBJ`, `EXT*`, `PERSID`, …) yields an
//!   opaque value. So does a dict subclass built by `REDUCE` (e.g. `OrderedDict`).
//! - A container placed inside another container becomes opaque, so the data kept is at most one
//!   level deep (a dict of scalars). Nothing recurses: not decoding, not dropping.
//! - Every length read from the input is checked against the bytes that remain before anything
//!   is allocated. The stack, marks and memo are bounded by the input length, and the strings
//!   of the result by a multiple of it.
//! - Strings are interned and shared (`Rc<str>`), so `DUP` and memo `GET` copy a pointer, and a
//!   dict key is looked up by identity, at the same cost however long it is.
//!
//! Choices where this differs from `pickle.loads`, none of which Flask-Session's own pickles meet:
//!
//! - Unicode strings that are not valid UTF-8 (Python allows lone surrogates) are
//!   [`Scalar::Other`], not an error: one odd value should not hide the rest of the session.
//! - Python 2 byte strings (`STRING`, `BINSTRING`, `SHORT_BINSTRING`) are decoded as ASCII, as
//!   `pickle.loads` does by default; non-ASCII ones are [`Scalar::Other`] where Python raises.
//! - Opaque values are not told apart, so some pickles Python rejects (e.g. `APPEND` onto
//!   `None`) are accepted. Nothing of them is kept, so that is harmless.
//! - The memo and `DUP` hold copies of scalars but only an opaque marker for a container: a pickle
//!   that fetches the top-level dict back from the memo (or `DUP`s it) before `STOP` yields
//!   [`PickleError::NotADict`]. Python's pickler memoizes the dict before filling it and never
//!   refers back to it.
//!
//! Pure functions; no I/O.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// One value of the top-level dict, as far as sting-proxy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    /// A `str`.
    Str(String),
    /// An `int` that fits in an `i64` (not a `bool`).
    Int(i64),
    /// Anything else: containers, objects, bytes, floats, bools, `None`, bigger ints.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    #[error("pickle is truncated: the opcode at byte {0} runs past the end, or there is no STOP")]
    Truncated(usize),
    #[error("unknown pickle opcode {opcode:#04x} at byte {offset}")]
    UnknownOpcode { opcode: u8, offset: usize },
    #[error("unsupported pickle protocol {0}")]
    UnsupportedProtocol(u8),
    #[error("invalid pickle at byte {offset}: {reason}")]
    Invalid { offset: usize, reason: &'static str },
    #[error("the pickled object is not a dict")]
    NotADict,
    #[error("the pickled dict's strings add up to more than {0} bytes")]
    TooLarge(usize),
}

/// Returns the entries of the pickled top-level dict whose keys are strings, in insertion order
/// (a repeated key keeps its first position and its last value, like a Python dict).
pub fn top_level_dict(bytes: &[u8]) -> Result<Vec<(String, Scalar)>, PickleError> {
    let dict = Machine::new(bytes).run()?;
    // The memo lets one long string be the value of many keys at two bytes per reference, so
    // copying the result into owned Strings could take memory quadratic in the input. Real
    // sessions repeat little: allow four times the input plus some slack.
    let budget = bytes.len().saturating_mul(4).saturating_add(64 * 1024);
    let total = dict.entries.iter().fold(0usize, |sum, (key, value)| {
        let value_len = match value {
            Item::Str(s) => s.len(),
            _ => 0,
        };
        sum.saturating_add(key.len()).saturating_add(value_len)
    });
    if total > budget {
        return Err(PickleError::TooLarge(budget));
    }
    Ok(dict
        .entries
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                Item::Str(s) => Scalar::Str(s.to_string()),
                Item::Int(i) => Scalar::Int(i),
                Item::Dict(_) | Item::Opaque => Scalar::Other,
            };
            (key.to_string(), value)
        })
        .collect())
}

/// Opcodes of protocols 0 – 5, named and grouped as in CPython's `pickletools`.
mod op {
    // Protocol 0 and 1.
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    // Protocol 2.
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    // Protocol 3.
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    // Protocol 4.
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    // Protocol 5.
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}

/// Python's `pickle.HIGHEST_PROTOCOL`; like CPython, `PROTO` refuses anything newer.
const HIGHEST_PROTOCOL: u8 = 5;

/// A value on the machine's stack, in its memo, or in a dict.
enum Item {
    Str(Rc<str>),
    Int(i64),
    /// A dict being built: the only container whose content is kept, and only while it is
    /// directly on the stack (see [`Item::nested`]).
    Dict(Box<Dict>),
    /// Anything whose content is not kept.
    Opaque,
}

impl Item {
    /// The value as stored inside a container, in the memo or by `DUP`: scalars are copied
    /// (strings cheaply, being shared) and a dict becomes opaque. This is what keeps the kept
    /// data one level deep; it also means memo values are never dicts.
    fn nested(&self) -> Item {
        match self {
            Item::Str(s) => Item::Str(Rc::clone(s)),
            Item::Int(i) => Item::Int(*i),
            Item::Dict(_) | Item::Opaque => Item::Opaque,
        }
    }
}

#[derive(Default)]
struct Dict {
    /// Entries with string keys in insertion order. Values are never `Item::Dict`.
    entries: Vec<(Rc<str>, Item)>,
    /// Position in `entries` by key. Strings are interned, so the pointer stands for the text.
    index: HashMap<*const u8, usize>,
}

impl Dict {
    fn set(&mut self, key: Item, value: Item) {
        // Other keys (ints, tuples, …) cannot name a session field.
        let Item::Str(key) = key else { return };
        let value = value.nested();
        match self.index.entry(Rc::as_ptr(&key) as *const u8) {
            Entry::Occupied(slot) => self.entries[*slot.get()].1 = value,
            Entry::Vacant(slot) => {
                slot.insert(self.entries.len());
                self.entries.push((key, value));
            }
        }
    }
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    /// Where the opcode being executed starts, for error messages.
    op_start: usize,
    stack: Vec<Item>,
    /// Stack lengths at each `MARK`: CPython's metastack.
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    /// Every distinct string seen, so equal texts share one allocation (see [`Dict::index`]).
    strings: HashSet<Rc<str>>,
}

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Self {
        Machine { input, pos: 0, op_start: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), strings: HashSet::new() }
    }

    /// Runs the opcodes up to `STOP` and returns the dict left on top of the stack.
    fn run(mut self) -> Result<Dict, PickleError> {
        loop {
            self.op_start = self.pos;
            let opcode = self.byte()?;
            match opcode {
                op::PROTO => {
                    let version = self.byte()?;
                    if version > HIGHEST_PROTOCOL {
                        return Err(PickleError::UnsupportedProtocol(version));
                    }
                }
                op::FRAME => {
                    // Frames only batch reads; the opcodes inside are read as usual. Like
                    // CPython, insist that the announced frame is present.
                    let len = self.u64()?;
                    if len > self.remaining() as u64 {
                        return Err(PickleError::Truncated(self.op_start));
                    }
                }
                op::STOP => {
                    return match self.pop()? {
                        Item::Dict(dict) => Ok(*dict),
                        _ => Err(PickleError::NotADict),
                    };
                }

                // Stack manipulation.
                op::MARK => {
                    self.check_room(self.marks.len())?;
                    self.marks.push(self.stack.len());
                }
                op::POP => {
                    // As in CPython, POP right after a MARK discards the mark.
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let copy = self.top()?.nested();
                    self.push(copy)?;
                }

                // Constants and numbers.
                op::NONE | op::NEWTRUE | op::NEWFALSE => self.push(Item::Opaque)?,
                op::INT => {
                    let text = self.line()?;
                    // Protocol 0 writes booleans as INT 01 / 00.
                    let item = match text {
                        b"00" | b"01" => Item::Opaque,
                        _ => decimal_int(text).ok_or_else(|| self.invalid("INT argument is not an integer"))?,
                    };
                    self.push(item)?;
                }
                op::LONG => {
                    let text = self.line()?;
                    let text = text.strip_suffix(b"L").unwrap_or(text);
                    let item = decimal_int(text).ok_or_else(|| self.invalid("LONG argument is not an integer"))?;
                    self.push(item)?;
                }
                op::BININT => {
                    let value = i32::from_le_bytes(self.array()?);
                    self.push(Item::Int(value.into()))?;
                }
                op::BININT1 => {
                    let value = self.byte()?;
                    self.push(Item::Int(value.into()))?;
                }
                op::BININT2 => {
                    let value = u16::from_le_bytes(self.array()?);
                    self.push(Item::Int(value.into()))?;
                }
                op::LONG1 => {
                    let len = self.byte()?;
                    let bytes = self.take(len.into())?;
                    self.push(little_endian_int(bytes))?;
                }
                op::LONG4 => {
                    let len = self.signed_len()?;
                    let bytes = self.take(len)?;
                    self.push(little_endian_int(bytes))?;
                }
                // The text is not checked: a float is opaque whatever it says.
                op::FLOAT => {
                    self.line()?;
                    self.push(Item::Opaque)?;
                }
                op::BINFLOAT => {
                    self.take(8)?;
                    self.push(Item::Opaque)?;
                }

                // Python 2 byte strings: Python 3 decodes them as ASCII by default.
                op::STRING => {
                    let text = self.line()?;
                    let quoted = match text {
                        [q @ (b'\'' | b'"'), inner @ .., last] if last == q => inner,
                        _ => return Err(self.invalid("STRING argument is not quoted")),
                    };
                    let bytes = escape_decode(quoted).map_err(|reason| self.invalid(reason))?;
                    let item = self.ascii(&bytes);
                    self.push(item)?;
                }
                op::BINSTRING => {
                    let len = self.signed_len()?;
                    let bytes = self.take(len)?;
                    let item = self.ascii(bytes);
                    self.push(item)?;
                }
                op::SHORT_BINSTRING => {
                    let len = self.byte()?;
                    let bytes = self.take(len.into())?;
                    let item = self.ascii(bytes);
                    self.push(item)?;
                }

                // Bytes and bytearrays are opaque; only their lengths matter.
                op::BINBYTES => {
                    let len = u32::from_le_bytes(self.array()?);
                    self.take_u64(len.into())?;
                    self.push(Item::Opaque)?;
                }
                op::SHORT_BINBYTES => {
                    let len = self.byte()?;
                    self.take(len.into())?;
                    self.push(Item::Opaque)?;
                }
                op::BINBYTES8 | op::BYTEARRAY8 => {
                    let len = self.u64()?;
                    self.take_u64(len)?;
                    self.push(Item::Opaque)?;
                }

                // Unicode strings.
                op::UNICODE => {
                    let text = self.line()?;
                    let item = match raw_unicode_escape(text).map_err(|reason| self.invalid(reason))? {
                        Some(text) => self.intern(&text),
                        None => Item::Opaque,
                    };
                    self.push(item)?;
                }
                op::BINUNICODE => {
                    let len = u32::from_le_bytes(self.array()?);
                    let bytes = self.take_u64(len.into())?;
                    let item = self.utf8(bytes);
                    self.push(item)?;
                }
                op::SHORT_BINUNICODE => {
                    let len = self.byte()?;
                    let bytes = self.take(len.into())?;
                    let item = self.utf8(bytes);
                    self.push(item)?;
                }
                op::BINUNICODE8 => {
                    let len = self.u64()?;
                    let bytes = self.take_u64(len)?;
                    let item = self.utf8(bytes);
                    self.push(item)?;
                }

                // Dicts: the only containers whose content is kept.
                op::EMPTY_DICT => self.push(Item::Dict(Box::default()))?,
                op::DICT => {
                    let items = self.pop_mark()?;
                    let mut dict = Dict::default();
                    set_pairs(&mut dict, items).map_err(|reason| self.invalid(reason))?;
                    self.push(Item::Dict(Box::new(dict)))?;
                }
                op::SETITEM => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }

                // Other containers are opaque: their content is dropped as it arrives.
                op::EMPTY_LIST | op::EMPTY_TUPLE | op::EMPTY_SET => self.push(Item::Opaque)?,
                op::LIST | op::TUPLE | op::FROZENSET => {
                    self.pop_mark()?;
                    self.push(Item::Opaque)?;
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    for _ in 0..=(opcode - op::TUPLE1) {
                        self.pop()?;
                    }
                    self.push(Item::Opaque)?;
                }
                op::APPEND => {
                    self.pop()?;
                    self.check_collection(1, "APPEND onto a dict or scalar")?;
                }
                op::APPENDS => {
                    let added = self.pop_mark()?.len();
                    self.check_collection(added, "APPENDS onto a dict or scalar")?;
                }
                op::ADDITEMS => {
                    let added = self.pop_mark()?.len();
                    self.check_collection(added, "ADDITEMS onto a dict or scalar")?;
                }

                // Object construction: nothing is looked up or called; the result is opaque.
                op::GLOBAL => {
                    self.line()?; // module
                    self.line()?; // name
                    self.push(Item::Opaque)?;
                }
                op::STACK_GLOBAL | op::REDUCE | op::NEWOBJ => {
                    self.pop()?;
                    self.pop()?;
                    self.push(Item::Opaque)?;
                }
                op::NEWOBJ_EX => {
                    for _ in 0..3 {
                        self.pop()?;
                    }
                    self.push(Item::Opaque)?;
                }
                op::BUILD => {
                    self.pop()?; // the state
                    *self.top()? = Item::Opaque;
                }
                op::INST => {
                    self.line()?; // module
                    self.line()?; // name
                    self.pop_mark()?;
                    self.push(Item::Opaque)?;
                }
                op::OBJ => {
                    // The class followed by its arguments.
                    if self.pop_mark()?.is_empty() {
                        return Err(self.invalid("OBJ without a class"));
                    }
                    self.push(Item::Opaque)?;
                }
                op::EXT1 => {
                    self.byte()?;
                    self.push(Item::Opaque)?;
                }
                op::EXT2 => {
                    self.take(2)?;
                    self.push(Item::Opaque)?;
                }
                op::EXT4 => {
                    self.take(4)?;
                    self.push(Item::Opaque)?;
                }
                op::PERSID => {
                    self.line()?;
                    self.push(Item::Opaque)?;
                }
                op::BINPERSID => {
                    self.pop()?;
                    self.push(Item::Opaque)?;
                }
                // Out-of-band buffers (protocol 5) are never supplied; they stand for opaque data.
                op::NEXT_BUFFER => self.push(Item::Opaque)?,
                op::READONLY_BUFFER => *self.top()? = Item::Opaque,

                // The memo.
                op::PUT => {
                    let index = self.line()?;
                    let index = decimal_index(index).ok_or_else(|| self.invalid("PUT argument is not an index"))?;
                    self.memo_put(index)?;
                }
                op::BINPUT => {
                    let index = self.byte()?;
                    self.memo_put(index.into())?;
                }
                op::LONG_BINPUT => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_put(index.into())?;
                }
                op::MEMOIZE => self.memo_put(self.memo.len() as u64)?,
                op::GET => {
                    let index = self.line()?;
                    let index = decimal_index(index).ok_or_else(|| self.invalid("GET argument is not an index"))?;
                    self.memo_get(index)?;
                }
                op::BINGET => {
                    let index = self.byte()?;
                    self.memo_get(index.into())?;
                }
                op::LONG_BINGET => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_get(index.into())?;
                }

                _ => return Err(PickleError::UnknownOpcode { opcode, offset: self.op_start }),
            }
        }
    }

    fn invalid(&self, reason: &'static str) -> PickleError {
        PickleError::Invalid { offset: self.op_start, reason }
    }

    // Reading arguments. Every length is compared with what remains before it is used.

    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], PickleError> {
        if len > self.remaining() {
            return Err(PickleError::Truncated(self.op_start));
        }
        let bytes = &self.input[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    /// `take` for a 64-bit length, compared as such so that a huge one cannot wrap.
    fn take_u64(&mut self, len: u64) -> Result<&'a [u8], PickleError> {
        if len > self.remaining() as u64 {
            return Err(PickleError::Truncated(self.op_start));
        }
        self.take(len as usize)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// The signed 4-byte length of `BINSTRING` and `LONG4`; negative is an error, as in CPython.
    fn signed_len(&mut self) -> Result<usize, PickleError> {
        let len = i32::from_le_bytes(self.array()?);
        usize::try_from(len).map_err(|_| self.invalid("negative length"))
    }

    /// A protocol 0 text argument, without its newline.
    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.input[self.pos..];
        let len = rest.iter().position(|&b| b == b'\n').ok_or(PickleError::Truncated(self.op_start))?;
        self.pos += len + 1;
        Ok(&rest[..len])
    }

    // The stack.

    /// Bounds the stack, marks and memo by the input length. Every entry costs at least one
    /// opcode byte, so this cannot fail today; it keeps the bound explicit should that change.
    fn check_room(&self, len: usize) -> Result<(), PickleError> {
        if len >= self.input.len() {
            return Err(self.invalid("more values than input bytes"));
        }
        Ok(())
    }

    fn push(&mut self, item: Item) -> Result<(), PickleError> {
        self.check_room(self.stack.len())?;
        self.stack.push(item);
        Ok(())
    }

    /// Values below the latest mark are out of reach until it is popped, as in CPython.
    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Item, PickleError> {
        if self.stack.len() > self.fence() {
            if let Some(item) = self.stack.pop() {
                return Ok(item);
            }
        }
        Err(self.invalid("stack underflow"))
    }

    fn top(&mut self) -> Result<&mut Item, PickleError> {
        let underflow = self.invalid("stack underflow");
        let fence = self.fence();
        self.stack.get_mut(fence..).and_then(<[Item]>::last_mut).ok_or(underflow)
    }

    /// Removes and returns the values above the latest mark, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Item>, PickleError> {
        let mark = self.marks.pop().ok_or_else(|| self.invalid("no MARK to pop"))?;
        // Pops never go below the latest mark, so this always holds.
        if mark > self.stack.len() {
            return Err(self.invalid("stack underflow"));
        }
        Ok(self.stack.split_off(mark))
    }

    /// `SETITEM(S)`: key/value pairs into the dict (or opaque mapping) below them.
    fn set_items(&mut self, items: Vec<Item>) -> Result<(), PickleError> {
        let offset = self.op_start;
        let invalid = |reason| PickleError::Invalid { offset, reason };
        match self.top()? {
            Item::Dict(dict) => set_pairs(dict, items).map_err(invalid),
            // As in CPython, an empty SETITEMS does not look at its target.
            _ if items.is_empty() => Ok(()),
            Item::Opaque if items.len() % 2 == 0 => Ok(()),
            Item::Opaque => Err(invalid("odd number of items for SETITEMS")),
            Item::Str(_) | Item::Int(_) => Err(invalid("SETITEM onto a scalar")),
        }
    }

    /// `APPEND(S)` and `ADDITEMS` need a list, set or object below the values they add: all
    /// opaque. As in CPython, adding no values does not look at the target.
    fn check_collection(&mut self, added: usize, reason: &'static str) -> Result<(), PickleError> {
        match self.top()? {
            _ if added == 0 => Ok(()),
            Item::Opaque => Ok(()),
            Item::Dict(_) | Item::Str(_) | Item::Int(_) => Err(self.invalid(reason)),
        }
    }

    // The memo.

    fn memo_put(&mut self, index: u64) -> Result<(), PickleError> {
        let value = self.top()?.nested();
        if !self.memo.contains_key(&index) {
            self.check_room(self.memo.len())?;
        }
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> Result<(), PickleError> {
        let value = self.memo.get(&index).map(Item::nested).ok_or_else(|| self.invalid("memo entry not found"))?;
        self.push(value)
    }

    // Strings.

    fn intern(&mut self, text: &str) -> Item {
        if let Some(shared) = self.strings.get(text) {
            return Item::Str(Rc::clone(shared));
        }
        let shared: Rc<str> = Rc::from(text);
        self.strings.insert(Rc::clone(&shared));
        Item::Str(shared)
    }

    fn utf8(&mut self, bytes: &[u8]) -> Item {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.intern(text),
            Err(_) => Item::Opaque,
        }
    }

    fn ascii(&mut self, bytes: &[u8]) -> Item {
        if bytes.is_ascii() {
            self.utf8(bytes)
        } else {
            Item::Opaque
        }
    }
}

/// Stores key/value pairs (alternating, as `DICT` and `SETITEMS` find them) in `dict`.
fn set_pairs(dict: &mut Dict, items: Vec<Item>) -> Result<(), &'static str> {
    if items.len() % 2 != 0 {
        return Err("odd number of items for a dict");
    }
    let mut items = items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        dict.set(key, value);
    }
    Ok(())
}

/// The decimal text of protocol 0's `INT` and `LONG`, as the pickler writes it. `None` if it is
/// not an integer; opaque if it does not fit in an `i64`.
fn decimal_int(text: &[u8]) -> Option<Item> {
    let text = text.trim_ascii();
    let digits = text.strip_prefix(b"-").or_else(|| text.strip_prefix(b"+")).unwrap_or(text);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // All ASCII, so this is valid UTF-8; `parse` fails only on overflow now.
    let text = std::str::from_utf8(text).ok()?;
    Some(text.parse().map_or(Item::Opaque, Item::Int))
}

/// The decimal memo index of protocol 0's `PUT` and `GET`.
fn decimal_index(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A little-endian two's-complement integer (`LONG1`, `LONG4`); opaque if it does not fit in
/// an `i64`. No bytes means zero.
fn little_endian_int(bytes: &[u8]) -> Item {
    let Some(&last) = bytes.last() else { return Item::Int(0) };
    let fill = if last & 0x80 != 0 { 0xff } else { 0x00 };
    let (low, high) = bytes.split_at(bytes.len().min(8));
    // Bytes beyond the eighth may only repeat the sign, which the eighth must already carry.
    if !high.is_empty() && (high.iter().any(|&b| b != fill) || (low[7] & 0x80 != 0) != (fill == 0xff)) {
        return Item::Opaque;
    }
    let mut buf = [fill; 8];
    buf[..low.len()].copy_from_slice(low);
    Item::Int(i64::from_le_bytes(buf))
}

/// Decodes Python's `raw-unicode-escape` (protocol 0's `UNICODE`): each byte is the Latin-1
/// code point, except `\uXXXX` and `\UXXXXXXXX`. A backslash before anything else is literal
/// and so is that next byte (so `\\u0041` is not an escape). `Ok(None)` for a lone surrogate,
/// which Python allows and Rust strings cannot hold.
fn raw_unicode_escape(bytes: &[u8]) -> Result<Option<String>, &'static str> {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while let [byte, tail @ ..] = rest {
        rest = tail;
        if *byte != b'\\' {
            out.push(char::from(*byte));
            continue;
        }
        let (count, tail) = match rest {
            [b'u', tail @ ..] => (4, tail),
            [b'U', tail @ ..] => (8, tail),
            [next, tail @ ..] => {
                out.push('\\');
                out.push(char::from(*next));
                rest = tail;
                continue;
            }
            [] => {
                out.push('\\');
                break;
            }
        };
        let hex = tail.get(..count).ok_or("truncated \\u escape in UNICODE")?;
        let code = hex_value(hex).ok_or("truncated \\u escape in UNICODE")?;
        if code > 0x10_ffff {
            return Err("\\U escape out of range in UNICODE");
        }
        match char::from_u32(code) {
            Some(c) => out.push(c),
            None => return Ok(None),
        }
        rest = &tail[count..];
    }
    Ok(Some(out))
}

/// Decodes Python's `codecs.escape_decode` (protocol 0's `STRING`, a Python 2 `repr`).
fn escape_decode(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let [byte, tail @ ..] = rest {
        rest = tail;
        if *byte != b'\\' {
            out.push(*byte);
            continue;
        }
        let [next, tail @ ..] = rest else { return Err("trailing \\ in STRING") };
        rest = tail;
        match next {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(*next),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                // Up to three octal digits; Python keeps the low byte of larger values.
                let mut value = u32::from(next - b'0');
                for _ in 0..2 {
                    match rest {
                        [digit @ b'0'..=b'7', tail @ ..] => {
                            value = value * 8 + u32::from(digit - b'0');
                            rest = tail;
                        }
                        _ => break,
                    }
                }
                out.push((value & 0xff) as u8);
            }
            b'x' => {
                let value = rest.get(..2).and_then(hex_value).ok_or("invalid \\x escape in STRING")?;
                out.push(value as u8);
                rest = &rest[2..];
            }
            other => {
                out.push(b'\\');
                out.push(*other);
            }
        }
    }
    Ok(out)
}

/// The value of a short run of hex digits (no sign, no prefix, at most 8 digits).
fn hex_value(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |value, &digit| Some((value << 4) | char::from(digit).to_digit(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    fn from_hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn str(s: &str) -> Scalar {
        Scalar::Str(s.into())
    }

    fn entries(expected: &[(&str, Scalar)]) -> Vec<(String, Scalar)> {
        expected.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    // Made with CPython 3.11.7:
    // python3 -c 'import pickle; print(pickle.dumps({"_permanent": True, "user_id": "u1",
    //     "email": "a@b.c", "role": "admin"}, protocol=N).hex())'
    // for N = 0, 2, 3, 4, 5. Protocol 4 is what Flask-Session 0.4 – 0.6 writes.
    const BASIC_P0: &str = concat!(
        "286470300a565f7065726d616e656e740a70310a4930310a7356757365725f69640a70320a5675310a70330a7356656d",
        "61696c0a70340a566140622e630a70350a7356726f6c650a70360a5661646d696e0a70370a732e",
    );
    const BASIC_P2: &str = concat!(
        "80027d710028580a0000005f7065726d616e656e747101885807000000757365725f6964710258020000007531710358",
        "05000000656d61696c710458050000006140622e6371055804000000726f6c657106580500000061646d696e7107752e",
    );
    const BASIC_P3: &str = concat!(
        "80037d710028580a0000005f7065726d616e656e747101885807000000757365725f6964710258020000007531710358",
        "05000000656d61696c710458050000006140622e6371055804000000726f6c657106580500000061646d696e7107752e",
    );
    const BASIC_P4: &str = concat!(
        "80049541000000000000007d94288c0a5f7065726d616e656e7494888c07757365725f6964948c027531948c05656d61",
        "696c948c056140622e63948c04726f6c65948c0561646d696e94752e",
    );
    const BASIC_P5: &str = concat!(
        "80059541000000000000007d94288c0a5f7065726d616e656e7494888c07757365725f6964948c027531948c05656d61",
        "696c948c056140622e63948c04726f6c65948c0561646d696e94752e",
    );
    const BASIC: [&str; 5] = [BASIC_P0, BASIC_P2, BASIC_P3, BASIC_P4, BASIC_P5];

    #[test]
    fn flask_session_dict_in_every_protocol() {
        let expected = entries(&[("_permanent", Scalar::Other), ("user_id", str("u1")), ("email", str("a@b.c")), ("role", str("admin"))]);
        for (protocol, hex) in [0, 2, 3, 4, 5].into_iter().zip(BASIC) {
            assert_eq!(top_level_dict(&from_hex(hex)), Ok(expected.clone()), "protocol {protocol}");
        }
    }

    // Made with CPython 3.11.7, `python3 rich.py N` for N = 0, 2, 3, 4, 5, where rich.py is:
    //
    //     import os, pickle, sys
    //     from datetime import datetime, timezone
    //
    //     class Evil:
    //         def __reduce__(self):
    //             return (os.system, ('echo pwned',))
    //
    //     shared = 'shared-token'
    //     session = {
    //         'user_id': 'u1', 'email': 'a@b.c', 'role': 'admin',
    //         'visits': 42, 'neg': -7, 'i64max': 2**63 - 1, 'i64min': -2**63, 'big': 2**63, 'huge': -2**200,
    //         'ratio': 0.5, 'flag': False, 'none': None, 'raw': b'\x00\xff', 'buf': bytearray(b'xy'),
    //         'nested': {'user_id': 'inner', 'l': [1, [2, [3]]]}, 'items': [1, 'two', (3,)], 'tags': {'a'},
    //         'frozen': frozenset({'b'}), 'when': datetime(2026, 1, 1, tzinfo=timezone.utc), 'evil': Evil(),
    //         'text': 'žluťoučký 🐍', 'esc': 'back\\slash\nnew\rline\x00\x1a', 'a': shared, 'b': shared, 7: 'seven',
    //     }
    //     print(pickle.dumps(session, protocol=int(sys.argv[1])).hex())
    const RICH_P0: &str = concat!(
        "286470300a56757365725f69640a70310a5675310a70320a7356656d61696c0a70330a566140622e630a70340a735672",
        "6f6c650a70350a5661646d696e0a70360a73567669736974730a70370a4934320a73566e65670a70380a492d370a7356",
        "6936346d61780a70390a4c393232333337323033363835343737353830374c0a73566936346d696e0a7031300a4c2d39",
        "3232333337323033363835343737353830384c0a73566269670a7031310a4c3932323333373230333638353437373538",
        "30384c0a7356687567650a7031320a4c2d31363036393338303434323538393930323735353431393632303932333431",
        "3136323630323532323230323939333738323739323833353330313337364c0a7356726174696f0a7031330a46302e35",
        "0a7356666c61670a7031340a4930300a73566e6f6e650a7031350a4e73567261770a7031360a635f636f646563730a65",
        "6e636f64650a7031370a28565c7530303030ff0a7031380a566c6174696e310a7031390a747032300a527032310a7356",
        "6275660a7032320a635f5f6275696c74696e5f5f0a6279746561727261790a7032330a286731370a285678790a703234",
        "0a6731390a747032350a527032360a747032370a527032380a73566e65737465640a7032390a28647033300a67310a56",
        "696e6e65720a7033310a73566c0a7033320a286c7033330a49310a61286c7033340a49320a61286c7033350a49330a61",
        "61617373566974656d730a7033360a286c7033370a49310a615674776f0a7033380a612849330a747033390a61735674",
        "6167730a7034300a635f5f6275696c74696e5f5f0a7365740a7034310a28286c7034320a56610a7034330a6174703434",
        "0a527034350a735666726f7a656e0a7034360a635f5f6275696c74696e5f5f0a66726f7a656e7365740a7034370a2828",
        "6c7034380a56620a7034390a61747035300a527035310a73567768656e0a7035320a636461746574696d650a64617465",
        "74696d650a7035330a286731370a285607ea01015c75303030305c75303030305c75303030305c75303030305c753030",
        "30305c75303030300a7035340a6731390a747035350a527035360a636461746574696d650a74696d657a6f6e650a7035",
        "370a28636461746574696d650a74696d6564656c74610a7035380a2849300a49300a49300a747035390a527036300a74",
        "7036310a527036320a747036330a527036340a73566576696c0a7036350a63706f7369780a73797374656d0a7036360a",
        "28566563686f2070776e65640a7036370a747036380a527036390a7356746578740a7037300a565c75303137656c755c",
        "75303136356f755c75303130646bfd205c5530303031663430640a7037310a73566573630a7037320a566261636b5c75",
        "30303563736c6173685c75303030616e65775c75303030646c696e655c75303030305c75303031610a7037330a736734",
        "330a567368617265642d746f6b656e0a7037340a736734390a6737340a7349370a56736576656e0a7037350a732e",
    );
    const RICH_P2: &str = concat!(
        "80027d7100285807000000757365725f696471015802000000753171025805000000656d61696c710358050000006140",
        "622e6371045804000000726f6c657105580500000061646d696e7106580600000076697369747371074b2a5803000000",
        "6e656771084af9ffffff58060000006936346d617871098a08ffffffffffffff7f58060000006936346d696e710a8a08",
        "00000000000000805803000000626967710b8a09000000000000008000580400000068756765710c8a1a000000000000",
        "00000000000000000000000000000000000000ff5805000000726174696f710d473fe00000000000005804000000666c",
        "6167710e8958040000006e6f6e65710f4e58030000007261777110635f636f646563730a656e636f64650a7111580300",
        "000000c3bf711258060000006c6174696e31711386711452711558030000006275667116635f5f6275696c74696e5f5f",
        "0a6279746561727261790a71176811580200000078797118681386711952711a85711b52711c58060000006e65737465",
        "64711d7d711e2868015805000000696e6e6572711f58010000006c71205d7121284b015d7122284b025d71234b036165",
        "657558050000006974656d7371245d7125284b01580300000074776f71264b0385712765580400000074616773712863",
        "5f5f6275696c74696e5f5f0a7365740a71295d712a580100000061712b6185712c52712d580600000066726f7a656e71",
        "2e635f5f6275696c74696e5f5f0a66726f7a656e7365740a712f5d713058010000006271316185713252713358040000",
        "007768656e7134636461746574696d650a6461746574696d650a71356811580b00000007c3aa01010000000000007136",
        "6813867137527138636461746574696d650a74696d657a6f6e650a7139636461746574696d650a74696d6564656c7461",
        "0a713a4b004b004b0087713b52713c85713d52713e86713f52714058040000006576696c714163706f7369780a737973",
        "74656d0a7142580a0000006563686f2070776e6564714385714452714558040000007465787471465812000000c5be6c",
        "75c5a56f75c48d6bc3bd20f09f908d71475803000000657363714858150000006261636b5c736c6173680a6e65770d6c",
        "696e65001a7149682b580c0000007368617265642d746f6b656e714a6831684a4b075805000000736576656e714b752e",
    );
    const RICH_P3: &str = concat!(
        "80037d7100285807000000757365725f696471015802000000753171025805000000656d61696c710358050000006140",
        "622e6371045804000000726f6c657105580500000061646d696e7106580600000076697369747371074b2a5803000000",
        "6e656771084af9ffffff58060000006936346d617871098a08ffffffffffffff7f58060000006936346d696e710a8a08",
        "00000000000000805803000000626967710b8a09000000000000008000580400000068756765710c8a1a000000000000",
        "00000000000000000000000000000000000000ff5805000000726174696f710d473fe00000000000005804000000666c",
        "6167710e8958040000006e6f6e65710f4e58030000007261777110430200ff711158030000006275667112636275696c",
        "74696e730a6279746561727261790a711343027879711485711552711658060000006e657374656471177d7118286801",
        "5805000000696e6e6572711958010000006c711a5d711b284b015d711c284b025d711d4b036165657558050000006974",
        "656d73711e5d711f284b01580300000074776f71204b03857121655804000000746167737122636275696c74696e730a",
        "7365740a71235d7124580100000061712561857126527127580600000066726f7a656e7128636275696c74696e730a66",
        "726f7a656e7365740a71295d712a580100000062712b6185712c52712d58040000007768656e712e636461746574696d",
        "650a6461746574696d650a712f430a07ea01010000000000007130636461746574696d650a74696d657a6f6e650a7131",
        "636461746574696d650a74696d6564656c74610a71324b004b004b008771335271348571355271368671375271385804",
        "0000006576696c713963706f7369780a73797374656d0a713a580a0000006563686f2070776e6564713b85713c52713d",
        "580400000074657874713e5812000000c5be6c75c5a56f75c48d6bc3bd20f09f908d713f580300000065736371405815",
        "0000006261636b5c736c6173680a6e65770d6c696e65001a71416825580c0000007368617265642d746f6b656e714268",
        "2b68424b075805000000736576656e7143752e",
    );
    const RICH_P4: &str = concat!(
        "8004953b020000000000007d94288c07757365725f6964948c027531948c05656d61696c948c056140622e63948c0472",
        "6f6c65948c0561646d696e948c06766973697473944b2a8c036e6567944af9ffffff8c066936346d6178948a08ffffff",
        "ffffffff7f8c066936346d696e948a0800000000000000808c03626967948a090000000000000080008c046875676594",
        "8a1a00000000000000000000000000000000000000000000000000ff8c05726174696f94473fe00000000000008c0466",
        "6c616794898c046e6f6e65944e8c0372617794430200ff948c03627566948c086275696c74696e73948c096279746561",
        "727261799493944302787994859452948c066e6573746564947d942868018c05696e6e6572948c016c945d94284b015d",
        "94284b025d944b03616565758c056974656d73945d94284b018c0374776f944b038594658c0474616773948f94288c01",
        "6194908c0666726f7a656e94288c01629491948c047768656e948c086461746574696d65948c086461746574696d6594",
        "9394430a07ea010100000000000094682b8c0874696d657a6f6e65949394682b8c0974696d6564656c74619493944b00",
        "4b004b008794529485945294869452948c046576696c948c05706f736978948c0673797374656d9493948c0a6563686f",
        "2070776e656494859452948c0474657874948c12c5be6c75c5a56f75c48d6bc3bd20f09f908d948c03657363948c1562",
        "61636b5c736c6173680a6e65770d6c696e65001a9468268c0c7368617265642d746f6b656e94682868444b078c057365",
        "76656e94752e",
    );
    const RICH_P5: &str = concat!(
        "80059525020000000000007d94288c07757365725f6964948c027531948c05656d61696c948c056140622e63948c0472",
        "6f6c65948c0561646d696e948c06766973697473944b2a8c036e6567944af9ffffff8c066936346d6178948a08ffffff",
        "ffffffff7f8c066936346d696e948a0800000000000000808c03626967948a090000000000000080008c046875676594",
        "8a1a00000000000000000000000000000000000000000000000000ff8c05726174696f94473fe00000000000008c0466",
        "6c616794898c046e6f6e65944e8c0372617794430200ff948c03627566949602000000000000007879948c066e657374",
        "6564947d942868018c05696e6e6572948c016c945d94284b015d94284b025d944b03616565758c056974656d73945d94",
        "284b018c0374776f944b038594658c0474616773948f94288c016194908c0666726f7a656e94288c01629491948c0477",
        "68656e948c086461746574696d65948c086461746574696d65949394430a07ea01010000000000009468268c0874696d",
        "657a6f6e6594939468268c0974696d6564656c74619493944b004b004b008794529485945294869452948c046576696c",
        "948c05706f736978948c0673797374656d9493948c0a6563686f2070776e656494859452948c0474657874948c12c5be",
        "6c75c5a56f75c48d6bc3bd20f09f908d948c03657363948c156261636b5c736c6173680a6e65770d6c696e65001a9468",
        "218c0c7368617265642d746f6b656e946823683f4b078c05736576656e94752e",
    );
    const RICH: [&str; 5] = [RICH_P0, RICH_P2, RICH_P3, RICH_P4, RICH_P5];

    #[test]
    fn nested_values_objects_and_odd_scalars_in_every_protocol() {
        let expected = entries(&[
            ("user_id", str("u1")),
            ("email", str("a@b.c")),
            ("role", str("admin")),
            ("visits", Scalar::Int(42)),
            ("neg", Scalar::Int(-7)),
            ("i64max", Scalar::Int(i64::MAX)),
            ("i64min", Scalar::Int(i64::MIN)),
            ("big", Scalar::Other),
            ("huge", Scalar::Other),
            ("ratio", Scalar::Other),
            ("flag", Scalar::Other),
            ("none", Scalar::Other),
            ("raw", Scalar::Other),
            ("buf", Scalar::Other),
            // The nested dict's user_id must not leak into the top level.
            ("nested", Scalar::Other),
            ("items", Scalar::Other),
            ("tags", Scalar::Other),
            ("frozen", Scalar::Other),
            ("when", Scalar::Other),
            ("evil", Scalar::Other),
            ("text", str("žluťoučký 🐍")),
            ("esc", str("back\\slash\nnew\rline\0\x1a")),
            ("a", str("shared-token")),
            ("b", str("shared-token")),
            // The int key 7 is left out.
        ]);
        for (protocol, hex) in [0, 2, 3, 4, 5].into_iter().zip(RICH) {
            assert_eq!(top_level_dict(&from_hex(hex)), Ok(expected.clone()), "protocol {protocol}");
        }
    }

    #[test]
    fn rarer_opcodes() {
        // Hand-assembled; `pickle.loads(p, buffers=[b'buf'])` gives {'py2': 'u2', 'bin': 'ok',
        // 'rep': "it'sAA\n", 'm2': 513, 't': True, 'l4': 32767, 'l1': -1, 'b8': b'x', 'by': b'x',
        // 'e': (), 'tup': (1, 2), 'lst': [1], 'dct': {'k': 'v'}, 'st': {1}, 'fs': frozenset({1}),
        // 'same': 'same', 'pop': 9, 't1': 'token', 't2': 'token', 't3': 'token', 't4': 5, 't5': 5,
        // 'f': 1.5, 'i': -12, 'bool': True, 'L': -5, 'u': 'žý🐍\\x', 'nb': b'buf', 'z': 0}.
        let parts: &[&[u8]] = &[
            b"\x80\x02}q\x00(",                                                    // PROTO 2, EMPTY_DICT, BINPUT 0, MARK
            b"U\x03py2U\x02u1",                                                    // SHORT_BINSTRING 'py2': SHORT_BINSTRING 'u1'
            b"T\x03\x00\x00\x00binT\x02\x00\x00\x00ok",                            // BINSTRING 'bin': BINSTRING 'ok'
            b"X\x03\x00\x00\x00repS'it\\'s\\x41\\101\\n'\n",                       // BINUNICODE 'rep': STRING with escapes
            b"X\x02\x00\x00\x00m2M\x01\x02",                                       // 'm2': BININT2 513
            b"X\x01\x00\x00\x00t\x88",                                             // 't': NEWTRUE
            b"\x8d\x02\x00\x00\x00\x00\x00\x00\x00l4\x8b\x02\x00\x00\x00\xff\x7f", // BINUNICODE8 'l4': LONG4 32767
            b"\x8c\x02l1\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff",             // 'l1': LONG1 -1 in nine bytes
            b"\x8c\x02b8\x8e\x01\x00\x00\x00\x00\x00\x00\x00x",                    // 'b8': BINBYTES8
            b"\x8c\x02byB\x01\x00\x00\x00x",                                       // 'by': BINBYTES
            b"\x8c\x01e)",                                                         // 'e': EMPTY_TUPLE
            b"\x8c\x03tup(K\x01K\x02t",                                            // 'tup': TUPLE from MARK
            b"\x8c\x03lst(K\x01l",                                                 // 'lst': LIST from MARK
            b"\x8c\x03dct(\x8c\x01k\x8c\x01vd",                                    // 'dct': DICT from MARK
            b"\x8c\x02st\x8f(K\x01\x90",                                           // 'st': EMPTY_SET, ADDITEMS
            b"\x8c\x02fs(K\x01\x91",                                               // 'fs': FROZENSET
            b"\x8c\x04same2",                                                      // DUP: 'same': 'same'
            b"\x8c\x03popK\x09K\x070",                                             // 'pop': 9 (POP drops 7)
            b"(K\x01K\x021",                                                       // POP_MARK drops a MARK and what follows it
            b"(0",                                                                 // POP right after MARK drops the MARK
            b"\x8c\x02t1\x8c\x05tokenr\x00\x01\x00\x00",                           // 't1': 'token', LONG_BINPUT 256
            b"\x8c\x02t2j\x00\x01\x00\x00",                                        // 't2': LONG_BINGET 256
            b"\x8c\x02t3g256\n",                                                   // 't3': GET 256
            b"\x8c\x02t4K\x05p7\n",                                                // 't4': 5, PUT 7
            b"\x8c\x02t5g7\n",                                                     // 't5': GET 7
            b"\x8c\x01fF1.5\n",                                                    // 'f': FLOAT
            b"\x8c\x01iI-12\n",                                                    // 'i': INT -12
            b"\x8c\x04boolI01\n",                                                  // 'bool': INT 01 (True)
            b"\x8c\x01LL-5L\n",                                                    // 'L': LONG -5
            b"\x8c\x01uV\\u017e\xfd\\U0001f40d\\x\n",                              // 'u': UNICODE with raw-unicode-escapes
            b"\x8c\x02nb\x97\x98",                                                 // 'nb': NEXT_BUFFER, READONLY_BUFFER
            b"\x8c\x03py2\x8c\x02u2",                                              // 'py2' again: the last value wins
            b"u",                                                                  // SETITEMS
            b"\x8c\x01zK\x00s.",                                                   // 'z': 0, SETITEM, STOP
        ];
        let expected = entries(&[
            ("py2", str("u2")),
            ("bin", str("ok")),
            ("rep", str("it'sAA\n")),
            ("m2", Scalar::Int(513)),
            ("t", Scalar::Other),
            ("l4", Scalar::Int(32767)),
            ("l1", Scalar::Int(-1)),
            ("b8", Scalar::Other),
            ("by", Scalar::Other),
            ("e", Scalar::Other),
            ("tup", Scalar::Other),
            ("lst", Scalar::Other),
            ("dct", Scalar::Other),
            ("st", Scalar::Other),
            ("fs", Scalar::Other),
            ("same", str("same")),
            ("pop", Scalar::Int(9)),
            ("t1", str("token")),
            ("t2", str("token")),
            ("t3", str("token")),
            ("t4", Scalar::Int(5)),
            ("t5", Scalar::Int(5)),
            ("f", Scalar::Other),
            ("i", Scalar::Int(-12)),
            ("bool", Scalar::Other),
            ("L", Scalar::Int(-5)),
            ("u", str("žý🐍\\x")),
            ("nb", Scalar::Other),
            ("z", Scalar::Int(0)),
        ]);
        assert_eq!(top_level_dict(&parts.concat()), Ok(expected));
    }

    #[test]
    fn objects_are_opaque_and_never_resolved() {
        // Hand-assembled; `pickletools.dis` accepts it. Loading it in Python would run `echo pwned`.
        let parts: &[&[u8]] = &[
            b"\x80\x02}(",                                    // PROTO 2, EMPTY_DICT, MARK
            b"\x8c\x01acos\nsystem\n\x8c\x0aecho pwned\x85R", // 'a': GLOBAL, TUPLE1, REDUCE
            b"\x8c\x01b\x8c\x02os\x8c\x06system\x93)R",       // 'b': STACK_GLOBAL, REDUCE
            b"\x8c\x01c(\x8c\x0aecho pwnedios\nsystem\n",     // 'c': INST
            b"\x8c\x01d(cos\nsystem\n\x8c\x0aecho pwnedo",    // 'd': OBJ
            b"\x8c\x01ecbuiltins\nobject\n)\x81",             // 'e': NEWOBJ
            b"\x8c\x01fcbuiltins\nobject\n)}\x92",            // 'f': NEWOBJ_EX
            b"\x8c\x01gcbuiltins\nobject\n)\x81}b",           // 'g': NEWOBJ, BUILD
            b"\x8c\x01h\x82\x01",                             // 'h': EXT1
            b"\x8c\x01i\x83\x01\x00",                         // 'i': EXT2
            b"\x8c\x01j\x84\x01\x00\x00\x00",                 // 'j': EXT4
            b"\x8c\x01kPpid\n",                               // 'k': PERSID
            b"\x8c\x01l\x8c\x03pidQ",                         // 'l': BINPERSID
            b"\x8c\x07user_id\x8c\x02u1u.",                   // 'user_id': 'u1', SETITEMS, STOP
        ];
        let mut expected: Vec<(String, Scalar)> = "abcdefghijkl".chars().map(|key| (key.to_string(), Scalar::Other)).collect();
        expected.push(("user_id".into(), str("u1")));
        assert_eq!(top_level_dict(&parts.concat()), Ok(expected));
    }

    #[test]
    fn only_a_dict_at_the_top_will_do() {
        // CPython 3.11.7: `pickle.dumps(collections.OrderedDict(user_id='u1'), protocol=4).hex()`
        // (a dict subclass, rebuilt by REDUCE) and `pickle.dumps(['u1'], protocol=4).hex()`.
        const ORDERED_DICT_P4: &str =
            concat!("80049532000000000000008c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394", "2952948c07757365725f6964948c02753194732e",);
        const LIST_P4: &str = "80049509000000000000005d948c02753194612e";
        assert_eq!(top_level_dict(&from_hex(ORDERED_DICT_P4)), Err(PickleError::NotADict));
        assert_eq!(top_level_dict(&from_hex(LIST_P4)), Err(PickleError::NotADict));
        assert_eq!(top_level_dict(b"\x80\x02N."), Err(PickleError::NotADict));
        assert_eq!(top_level_dict(b"\x80\x02\x8c\x02u1."), Err(PickleError::NotADict));
        // The memo keeps only a marker for containers, so a dict fetched back from it is opaque.
        // Python's pickler never does this with the dict it is writing.
        assert_eq!(top_level_dict(b"\x80\x02}q\x00h\x00."), Err(PickleError::NotADict));
        // A dict above other values is fine: STOP takes the top, and marks may be left over.
        assert_eq!(top_level_dict(b"\x80\x02K\x01(}."), Ok(vec![]));
    }

    #[test]
    fn malformed_pickles_are_errors() {
        let invalid = |at| move |e: PickleError| matches!(e, PickleError::Invalid { offset, .. } if offset == at);
        assert_eq!(top_level_dict(b""), Err(PickleError::Truncated(0)));
        assert_eq!(top_level_dict(b"\x80\x02}"), Err(PickleError::Truncated(3)));
        assert_eq!(top_level_dict(b"}I12"), Err(PickleError::Truncated(1)));
        assert_eq!(top_level_dict(b"\x80\x06}."), Err(PickleError::UnsupportedProtocol(6)));
        assert_eq!(top_level_dict(b"\x80\x02}\xff."), Err(PickleError::UnknownOpcode { opcode: 0xff, offset: 3 }));
        // Stack underflow, also across a MARK.
        assert!(top_level_dict(b".").is_err_and(invalid(0)));
        assert!(top_level_dict(b"}(.").is_err_and(invalid(2)));
        assert!(top_level_dict(b"}(s.").is_err_and(invalid(2)));
        assert!(top_level_dict(b"}1.").is_err_and(invalid(1)));
        assert!(top_level_dict(b"}(K\x01t0.").is_ok());
        // Odd SETITEMS or DICT; SETITEM or APPEND onto the wrong thing; unknown memo index; OBJ
        // without a class.
        assert!(top_level_dict(b"}(K\x01u.").is_err_and(invalid(4)));
        assert!(top_level_dict(b"(K\x01d.").is_err_and(invalid(3)));
        assert!(top_level_dict(b"K\x01K\x01K\x01s.").is_err_and(invalid(6)));
        assert!(top_level_dict(b"}K\x01a.").is_err_and(invalid(3)));
        assert!(top_level_dict(b"}h\x05.").is_err_and(invalid(1)));
        assert!(top_level_dict(b"}(o.").is_err_and(invalid(2)));
        // As in CPython, adding nothing does not look at the target.
        assert!(top_level_dict(b"}K\x01(u(e(\x900.").is_ok());
        // Malformed text arguments.
        assert!(top_level_dict(b"}I1x\n.").is_err_and(invalid(1)));
        assert!(top_level_dict(b"}I\n.").is_err_and(invalid(1)));
        assert!(top_level_dict(b"}p-1\n.").is_err_and(invalid(1)));
        assert!(top_level_dict(b"}Sabc\n.").is_err_and(invalid(1)));
        assert!(top_level_dict(b"}S'\\x4'\n.").is_err_and(invalid(1)));
        assert!(top_level_dict(b"}V\\u12\n.").is_err_and(invalid(1)));
        assert!(top_level_dict(b"}V\\U00110000\n.").is_err_and(invalid(1)));
    }

    #[test]
    fn undecodable_strings_are_other() {
        // Values: invalid UTF-8, a lone surrogate (Python allows it), a non-ASCII Python 2
        // string. Then a key that is not UTF-8, which is left out.
        let p = b"\x80\x02}(\x8c\x01a\x8c\x02\xc3\x28\x8c\x01bV\\ud800\n\x8c\x01cU\x01\xe9\x8c\x01\xff\x8c\x01xu.";
        let expected = entries(&[("a", Scalar::Other), ("b", Scalar::Other), ("c", Scalar::Other)]);
        assert_eq!(top_level_dict(p), Ok(expected));
    }

    #[test]
    fn lying_lengths_fail_before_allocating() {
        // Each announces far more bytes than follow; allocating first would abort the test.
        for len in [1u64 << 62, u64::MAX, u64::from(u32::MAX)] {
            for opcode in [op::BINUNICODE8, op::BINBYTES8, op::BYTEARRAY8, op::FRAME] {
                let mut p = vec![op::PROTO, 5, opcode];
                p.extend(len.to_le_bytes());
                p.extend(b"}.");
                assert_eq!(top_level_dict(&p), Err(PickleError::Truncated(2)), "{opcode:#04x} {len}");
            }
        }
        for opcode in [op::BINUNICODE, op::BINBYTES, op::BINSTRING, op::LONG4] {
            let p = [op::PROTO, 2, opcode, 0xff, 0xff, 0xff, 0x7f, b'}', b'.'];
            assert_eq!(top_level_dict(&p), Err(PickleError::Truncated(2)), "{opcode:#04x}");
        }
        for opcode in [op::SHORT_BINUNICODE, op::SHORT_BINBYTES, op::SHORT_BINSTRING, op::LONG1] {
            let p = [op::PROTO, 2, opcode, 0xff, b'}', b'.'];
            assert_eq!(top_level_dict(&p), Err(PickleError::Truncated(2)), "{opcode:#04x}");
        }
        // Negative lengths, which CPython refuses too.
        for opcode in [op::BINSTRING, op::LONG4] {
            let p = [op::PROTO, 2, opcode, 0xff, 0xff, 0xff, 0xff, b'}', b'.'];
            assert!(matches!(top_level_dict(&p), Err(PickleError::Invalid { offset: 2, .. })), "{opcode:#04x}");
        }
    }

    #[test]
    fn every_truncation_of_a_real_pickle_is_an_error() {
        for hex in BASIC.iter().chain(&RICH) {
            let bytes = from_hex(hex);
            assert!(top_level_dict(&bytes).is_ok());
            for len in 0..bytes.len() {
                assert!(top_level_dict(&bytes[..len]).is_err(), "prefix of {len} bytes");
            }
        }
    }

    /// Fails the test if `f` takes far longer than it should. This catches quadratic behaviour
    /// (the inputs are sized so that it would take minutes); it is not a benchmark.
    fn quickly<T>(f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let result = f();
        assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
        result
    }

    #[test]
    fn deep_nesting_neither_recurses_nor_fails() {
        const DEPTH: usize = 200_000;
        let user = b"\x8c\x07user_id\x8c\x02u1s.";
        let expected = Ok(entries(&[("x", Scalar::Other), ("user_id", str("u1"))]));

        // {'x': [[[…]]], 'user_id': 'u1'} by EMPTY_LIST and APPEND.
        let mut p = b"\x80\x04}\x8c\x01x".to_vec();
        p.extend(std::iter::repeat_n(op::EMPTY_LIST, DEPTH));
        p.extend(std::iter::repeat_n(op::APPEND, DEPTH - 1));
        p.push(op::SETITEM);
        p.extend(user);
        assert_eq!(quickly(|| top_level_dict(&p)), expected);

        // The same in the shape Python's pickler writes: EMPTY_LIST MEMOIZE MARK … APPENDS.
        let mut p = b"\x80\x04}\x94\x8c\x01x".to_vec();
        for _ in 0..DEPTH {
            p.extend(b"]\x94(");
        }
        p.push(op::EMPTY_TUPLE);
        p.extend(std::iter::repeat_n(op::APPENDS, DEPTH));
        p.push(op::SETITEM);
        p.extend(user);
        assert_eq!(quickly(|| top_level_dict(&p)), expected);

        // Nested dicts: {'x': {'k': {'k': … None}}, 'user_id': 'u1'}.
        let mut p = b"\x80\x04}\x8c\x01x".to_vec();
        for _ in 0..DEPTH {
            p.extend(b"}\x8c\x01k");
        }
        p.push(op::NONE);
        p.extend(std::iter::repeat_n(op::SETITEM, DEPTH + 1));
        p.extend(user);
        assert_eq!(quickly(|| top_level_dict(&p)), expected);

        // Marks nest without limit too.
        let mut p = b"\x80\x04}".to_vec();
        p.extend(std::iter::repeat_n(op::MARK, DEPTH));
        p.extend(std::iter::repeat_n(op::POP_MARK, DEPTH));
        p.extend(user);
        assert_eq!(quickly(|| top_level_dict(&p)), Ok(entries(&[("user_id", str("u1"))])));
    }

    #[test]
    fn one_long_string_referenced_many_times_is_refused() {
        // {'0': s, '1': s, …} with s 40 KB: a ~130 KB pickle whose result would take 400 MB.
        let mut p = b"\x80\x04}\x8c\x010X\x40\x9c\x00\x00".to_vec();
        p.extend(std::iter::repeat_n(b'x', 40_000));
        p.extend(b"\x94s");
        for i in 1..10_000 {
            let key = i.to_string();
            p.extend([op::SHORT_BINUNICODE, key.len() as u8]);
            p.extend(key.as_bytes());
            p.extend(b"h\x00s");
        }
        p.push(op::STOP);
        assert!(matches!(quickly(|| top_level_dict(&p)), Err(PickleError::TooLarge(_))));
    }

    #[test]
    fn one_long_key_set_many_times_is_cheap() {
        // Keys are looked up by identity, not by hashing their text at each SETITEM.
        let mut p = b"\x80\x04}X\x40\x9c\x00\x00".to_vec();
        p.extend(std::iter::repeat_n(b'k', 40_000));
        p.extend(b"\x94K\x00s");
        for _ in 0..100_000 {
            p.extend(b"h\x00K\x01s");
        }
        p.push(op::STOP);
        assert_eq!(quickly(|| top_level_dict(&p)), Ok(vec![("k".repeat(40_000), Scalar::Int(1))]));
    }

    #[test]
    fn integers() {
        assert!(matches!(little_endian_int(b""), Item::Int(0)));
        assert!(matches!(little_endian_int(b"\xff"), Item::Int(-1)));
        assert!(matches!(little_endian_int(b"\x80\x00"), Item::Int(128)));
        assert!(matches!(little_endian_int(&[0xff; 12]), Item::Int(-1)));
        // Redundant sign bytes beyond the eighth are fine; a ninth byte that matters is not.
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00];
        assert!(matches!(little_endian_int(&max), Item::Int(i64::MAX)));
        let min = [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0xff];
        assert!(matches!(little_endian_int(&min), Item::Int(i64::MIN)));
        let two_to_the_63 = [0, 0, 0, 0, 0, 0, 0, 0x80, 0x00];
        assert!(matches!(little_endian_int(&two_to_the_63), Item::Opaque));
        assert!(matches!(decimal_int(b" +12 "), Some(Item::Int(12))));
        assert!(matches!(decimal_int(b"-9223372036854775808"), Some(Item::Int(i64::MIN))));
        assert!(matches!(decimal_int(b"9223372036854775808"), Some(Item::Opaque)));
        assert!(decimal_int(b"").is_none());
        assert!(decimal_int(b"-").is_none());
        assert!(decimal_int(b"0x10").is_none());
    }

    /// Pieces for `opcode_soup_never_panics`: mostly well-formed opcodes with their arguments.
    const SOUP: &[&[u8]] = &[
        b"(",
        b")",
        b"]",
        b"}",
        b"\x8f",
        b"N",
        b"\x88",
        b"K\x01",
        b"J\xff\xff\xff\xff",
        b"\x8a\x01\x80",
        b"\x8c\x01k",
        b"\x8c\x07user_id",
        b"X\x01\x00\x00\x00v",
        b"Vu\n",
        b"S'a'\n",
        b"U\x01b",
        b"I5\n",
        b"\x94",
        b"q\x00",
        b"q\x01",
        b"h\x00",
        b"h\x01",
        b"p0\n",
        b"g0\n",
        b"0",
        b"1",
        b"2",
        b"a",
        b"e",
        b"s",
        b"u",
        b"d",
        b"l",
        b"t",
        b"\x85",
        b"\x86",
        b"\x87",
        b"\x90",
        b"\x91",
        b"R",
        b"b",
        b"\x81",
        b"\x92",
        b"\x93",
        b"o",
        b"Q",
        b"\x97",
        b"\x98",
        b"cm\nn\n",
        b"im\nn\n",
        b".",
    ];

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = top_level_dict(&bytes);
        }

        #[test]
        fn protocol_4_noise_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let mut bytes = vec![0x80, 0x04];
            bytes.extend(tail);
            let _ = top_level_dict(&bytes);
        }

        /// Real pickles with a few bytes changed reach much further into the machine than noise.
        #[test]
        fn corrupted_real_pickles_never_panic(
            which in 0..10usize,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = from_hex(BASIC.iter().chain(&RICH).nth(which).unwrap());
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let _ = top_level_dict(&bytes);
        }

        /// Random sequences of opcodes exercise the stack, marks and memo.
        #[test]
        fn opcode_soup_never_panics(pieces in proptest::collection::vec(prop::sample::select(SOUP), 0..200)) {
            let mut bytes = vec![0x80, 0x04];
            bytes.extend(pieces.concat());
            bytes.push(op::STOP);
            let _ = top_level_dict(&bytes);
        }
    }
}
