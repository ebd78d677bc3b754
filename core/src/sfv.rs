//! Structured Field Values (RFC 9651): an exact parser for Items, Lists and Dictionaries, a
//! serializer for them, and writers for the values a client sends (`?1`/`?0`, integers).
//!
//! The resumable-upload draft defines its fields as structured fields (R2): `Upload-Offset`,
//! `Upload-Length` (Integer Items), `Upload-Complete` (a Boolean Item) and `Upload-Limit` (a
//! Dictionary, R11). Their typed readers live in [`crate::ietf::limit`]; this module is the
//! grammar underneath.
//!
//! The parser follows the algorithms of RFC 9651 §4.2 step by step, with every bare item type
//! (Integer, Decimal, String, Token, Byte Sequence, Boolean, Date, Display String), so that a
//! parameter or an unknown dictionary member of any type parses as the RFC says. Any deviation
//! fails the whole field ([`ParseError`]); a field that fails is to be treated as absent.
//! Several field lines of one name are combined with `,` first (RFC 9651 §4.2, RFC 9110 §5.3):
//! use [`item_field`], [`list_field`] and [`dictionary_field`] on a [`HeaderMap`].
//!
//! Work is linear in the input (duplicate keys are found through an ordered index, never by
//! scanning), there is no recursion deeper than an inner list, and nothing panics.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use http::header::AsHeaderName;
use http::{HeaderMap, HeaderValue};

/// The largest magnitude of an Integer (and of a Date): fifteen digits (RFC 9651 §3.3.1).
pub const MAX_INTEGER: i64 = 999_999_999_999_999;

/// A Decimal (RFC 9651 §3.3.2): at most twelve integer and three fractional digits, held
/// exactly as a count of thousandths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal(i64);

impl Decimal {
    /// The Decimal `thousandths / 1000`, or `None` outside the range a Decimal can hold
    /// (more than twelve integer digits).
    pub fn from_thousandths(thousandths: i64) -> Option<Decimal> {
        (thousandths.unsigned_abs() <= MAX_INTEGER.unsigned_abs()).then_some(Decimal(thousandths))
    }

    /// The value in thousandths (`1.5` is 1500).
    pub fn thousandths(self) -> i64 {
        self.0
    }
}

/// A bare item: the value of an Item or of a parameter (RFC 9651 §3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BareItem {
    /// An Integer, within ±[`MAX_INTEGER`].
    Integer(i64),
    /// A Decimal.
    Decimal(Decimal),
    /// A String: printable ASCII (escapes removed).
    String(String),
    /// A Token: starts with a letter or `*`, then token characters, `:` or `/`.
    Token(String),
    /// A Byte Sequence (decoded from base64).
    ByteSequence(Vec<u8>),
    /// A Boolean (`?1`, `?0`; a bare key in a dictionary or parameter means true).
    Boolean(bool),
    /// A Date: seconds since 1970-01-01T00:00:00Z, within ±[`MAX_INTEGER`].
    Date(i64),
    /// A Display String (decoded from its percent-encoded UTF-8).
    DisplayString(String),
}

impl BareItem {
    /// The Integer this is, if it is one.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            BareItem::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The Boolean this is, if it is one.
    pub fn as_boolean(&self) -> Option<bool> {
        match self {
            BareItem::Boolean(b) => Some(*b),
            _ => None,
        }
    }
}

/// The parameters of an Item or Inner List: an ordered map from key to bare item, keys
/// unique (RFC 9651 §3.1.2). Parsed always; a field's reader may ignore them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parameters(Vec<(String, BareItem)>);

impl Parameters {
    /// No parameters.
    pub fn new() -> Parameters {
        Parameters::default()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&BareItem> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `value`: in place if the key is present, else at the end (as parsing a
    /// repeated key does).
    pub fn insert(&mut self, key: impl Into<String>, value: BareItem) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// The parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BareItem)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many parameters there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An Item: a bare item with parameters (RFC 9651 §3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The value.
    pub bare: BareItem,
    /// Its parameters.
    pub params: Parameters,
}

impl Item {
    /// An Item without parameters.
    pub fn new(bare: BareItem) -> Item {
        Item {
            bare,
            params: Parameters::new(),
        }
    }
}

/// An Inner List: Items in parentheses, with parameters of its own (RFC 9651 §3.1.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InnerList {
    /// The Items in order.
    pub items: Vec<Item>,
    /// The list's own parameters.
    pub params: Parameters,
}

/// A member of a List or a Dictionary: an Item or an Inner List.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Member {
    /// An Item.
    Item(Item),
    /// An Inner List.
    InnerList(InnerList),
}

impl Member {
    /// The Item this is, if it is not an Inner List.
    pub fn as_item(&self) -> Option<&Item> {
        match self {
            Member::Item(item) => Some(item),
            Member::InnerList(_) => None,
        }
    }
}

/// A Dictionary: an ordered map from key to member, keys unique (RFC 9651 §3.2). When a key
/// repeats in the field, the last value wins and keeps the first one's place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dictionary(Vec<(String, Member)>);

impl Dictionary {
    /// An empty Dictionary.
    pub fn new() -> Dictionary {
        Dictionary::default()
    }

    /// The member under `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Member> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `member`: in place if the key is present, else at the end.
    pub fn insert(&mut self, key: impl Into<String>, member: Member) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = member,
            None => self.0.push((key, member)),
        }
    }

    /// The members in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Member)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (the same as the field being absent).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A field value that is not a valid structured field of the type asked for. The RFC's
/// answer is to ignore the whole field (RFC 9651 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid structured field: {kind} (at byte {offset})")]
pub struct ParseError {
    /// Where in the (combined) field value parsing failed.
    pub offset: usize,
    /// What was wrong there.
    pub kind: ParseErrorKind,
}

/// What made a structured field fail to parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A byte outside ASCII.
    #[error("a byte that is not ASCII")]
    NotAscii,
    /// Something follows a complete value.
    #[error("characters after the value")]
    TrailingCharacters,
    /// A list or dictionary ends with a comma.
    #[error("a trailing comma")]
    TrailingComma,
    /// Members are not separated by a comma.
    #[error("a comma was expected")]
    ExpectedComma,
    /// A key that does not start with a lower-case letter or `*`.
    #[error("an invalid key")]
    Key,
    /// Nothing, or a character that starts no item type.
    #[error("no item starts here")]
    UnknownItemType,
    /// An Integer or Decimal that is malformed or too long.
    #[error("an invalid number")]
    Number,
    /// A String with a bad escape or character, or without its closing quote.
    #[error("an invalid string")]
    String,
    /// A Byte Sequence without its closing colon, or not base64.
    #[error("an invalid byte sequence")]
    ByteSequence,
    /// `?` followed by anything but `0` or `1`.
    #[error("an invalid boolean")]
    Boolean,
    /// `@` not followed by an Integer.
    #[error("an invalid date")]
    Date,
    /// A Display String with a bad escape or character, not UTF-8, or unterminated.
    #[error("an invalid display string")]
    DisplayString,
    /// An Inner List whose items are not separated by spaces, or that is not closed.
    #[error("an invalid inner list")]
    InnerList,
}

/// A value that RFC 9651 §4.1 cannot write ("fail serialization").
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot be written as a structured field: {0}")]
pub struct SerializeError(pub(crate) &'static str);

// -------------------------------------------------------------------------------------------
// Header maps
// -------------------------------------------------------------------------------------------

/// All field lines named `name`, combined with `, ` (RFC 9110 §5.3), or `None` when absent.
fn combined<K: AsHeaderName>(headers: &HeaderMap, name: K) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for value in headers.get_all(name) {
        match &mut out {
            None => out = Some(value.as_bytes().to_vec()),
            Some(buf) => {
                buf.extend_from_slice(b", ");
                buf.extend_from_slice(value.as_bytes());
            }
        }
    }
    out
}

/// Reads the Item field `name` from `headers` (all its lines combined): `Ok(None)` when
/// absent.
///
/// # Errors
/// [`ParseError`] when the field is not one valid Item; treat the field as absent then.
pub fn item_field<K: AsHeaderName>(
    headers: &HeaderMap,
    name: K,
) -> Result<Option<Item>, ParseError> {
    combined(headers, name)
        .map(|value| parse_item(&value))
        .transpose()
}

/// Reads the List field `name` from `headers` (all its lines combined): `Ok(None)` when
/// absent.
///
/// # Errors
/// [`ParseError`] when the field is not a valid List; treat the field as absent then.
pub fn list_field<K: AsHeaderName>(
    headers: &HeaderMap,
    name: K,
) -> Result<Option<Vec<Member>>, ParseError> {
    combined(headers, name)
        .map(|value| parse_list(&value))
        .transpose()
}

/// Reads the Dictionary field `name` from `headers` (all its lines combined): `Ok(None)`
/// when absent.
///
/// # Errors
/// [`ParseError`] when the field is not a valid Dictionary; treat the field as absent then.
pub fn dictionary_field<K: AsHeaderName>(
    headers: &HeaderMap,
    name: K,
) -> Result<Option<Dictionary>, ParseError> {
    combined(headers, name)
        .map(|value| parse_dictionary(&value))
        .transpose()
}

// -------------------------------------------------------------------------------------------
// Parsing (RFC 9651 §4.2)
// -------------------------------------------------------------------------------------------

/// Parses one field value as an Item (RFC 9651 §4.2 with field_type "item").
///
/// # Errors
/// [`ParseError`] for anything that is not exactly one Item, SP around it allowed.
pub fn parse_item(value: &[u8]) -> Result<Item, ParseError> {
    Parser::top_level(value, Parser::item)
}

/// Parses one (combined) field value as a List (RFC 9651 §4.2 with field_type "list"). An
/// empty value is an empty List.
///
/// # Errors
/// [`ParseError`] for anything that is not a List.
pub fn parse_list(value: &[u8]) -> Result<Vec<Member>, ParseError> {
    Parser::top_level(value, Parser::list)
}

/// Parses one (combined) field value as a Dictionary (RFC 9651 §4.2 with field_type
/// "dictionary"). An empty value is an empty Dictionary; a bare key means `?1`; a repeated
/// key's last value wins.
///
/// # Errors
/// [`ParseError`] for anything that is not a Dictionary.
pub fn parse_dictionary(value: &[u8]) -> Result<Dictionary, ParseError> {
    Parser::top_level(value, Parser::dictionary).map(Dictionary)
}

/// Byte Sequences: the standard alphabet; missing padding and non-zero pad bits are accepted,
/// as RFC 9651 §4.2.7 asks of parsers.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// An ordered map under construction: entries in first-seen order, an index to find a repeated
/// key without scanning (so a field of many keys stays linear-logarithmic).
struct OrderedMap<V> {
    entries: Vec<(String, V)>,
    index: BTreeMap<String, usize>,
}

impl<V> OrderedMap<V> {
    fn new() -> Self {
        OrderedMap {
            entries: Vec::new(),
            index: BTreeMap::new(),
        }
    }

    /// A repeated key overwrites the value and keeps its place (RFC 9651 §4.2.2, §4.2.3.2).
    fn insert(&mut self, key: String, value: V) {
        if let Some(entry) = self.index.get(&key).and_then(|&i| self.entries.get_mut(i)) {
            entry.1 = value;
            return;
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
}

/// ASCII bytes as a `String` (every input byte was checked to be ASCII first).
fn ascii(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn lower_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl<'a> Parser<'a> {
    /// §4.2: ASCII only; leading SP; the value; trailing SP; nothing else.
    fn top_level<T>(
        input: &'a [u8],
        parse: impl FnOnce(&mut Parser<'a>) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        if let Some(offset) = input.iter().position(|b| !b.is_ascii()) {
            return Err(ParseError {
                offset,
                kind: ParseErrorKind::NotAscii,
            });
        }
        let mut parser = Parser { input, pos: 0 };
        parser.skip_sp();
        let output = parse(&mut parser)?;
        parser.skip_sp();
        if !parser.is_empty() {
            return Err(parser.fail(ParseErrorKind::TrailingCharacters));
        }
        Ok(output)
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    /// Consumes `b` if it comes next.
    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.pos += 1;
        }
        found
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn fail(&self, kind: ParseErrorKind) -> ParseError {
        ParseError {
            offset: self.pos,
            kind,
        }
    }

    fn since(&self, start: usize) -> &'a [u8] {
        self.input.get(start..self.pos).unwrap_or_default()
    }

    fn skip_sp(&mut self) {
        while self.eat(b' ') {}
    }

    fn skip_ows(&mut self) {
        while self.eat(b' ') || self.eat(b'\t') {}
    }

    /// After a member of a List or Dictionary: `Ok(true)` at the end, `Ok(false)` when another
    /// member follows a comma (§4.2.1 steps 2.2–2.6, §4.2.2 steps 2.6–2.10).
    fn member_separator(&mut self) -> Result<bool, ParseError> {
        self.skip_ows();
        if self.is_empty() {
            return Ok(true);
        }
        if !self.eat(b',') {
            return Err(self.fail(ParseErrorKind::ExpectedComma));
        }
        self.skip_ows();
        if self.is_empty() {
            return Err(self.fail(ParseErrorKind::TrailingComma));
        }
        Ok(false)
    }

    /// §4.2.1 Parsing a List.
    fn list(&mut self) -> Result<Vec<Member>, ParseError> {
        let mut members = Vec::new();
        while !self.is_empty() {
            members.push(self.item_or_inner_list()?);
            if self.member_separator()? {
                break;
            }
        }
        Ok(members)
    }

    /// §4.2.1.1 Parsing an Item or Inner List.
    fn item_or_inner_list(&mut self) -> Result<Member, ParseError> {
        if self.peek() == Some(b'(') {
            self.inner_list().map(Member::InnerList)
        } else {
            self.item().map(Member::Item)
        }
    }

    /// §4.2.1.2 Parsing an Inner List.
    fn inner_list(&mut self) -> Result<InnerList, ParseError> {
        if !self.eat(b'(') {
            return Err(self.fail(ParseErrorKind::InnerList));
        }
        let mut items = Vec::new();
        while !self.is_empty() {
            self.skip_sp();
            if self.eat(b')') {
                let params = self.parameters()?;
                return Ok(InnerList { items, params });
            }
            items.push(self.item()?);
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return Err(self.fail(ParseErrorKind::InnerList));
            }
        }
        Err(self.fail(ParseErrorKind::InnerList))
    }

    /// §4.2.2 Parsing a Dictionary.
    fn dictionary(&mut self) -> Result<Vec<(String, Member)>, ParseError> {
        let mut dictionary = OrderedMap::new();
        while !self.is_empty() {
            let key = self.key()?;
            let member = if self.eat(b'=') {
                self.item_or_inner_list()?
            } else {
                Member::Item(Item {
                    bare: BareItem::Boolean(true),
                    params: self.parameters()?,
                })
            };
            dictionary.insert(key, member);
            if self.member_separator()? {
                break;
            }
        }
        Ok(dictionary.entries)
    }

    /// §4.2.3 Parsing an Item.
    fn item(&mut self) -> Result<Item, ParseError> {
        let bare = self.bare_item()?;
        let params = self.parameters()?;
        Ok(Item { bare, params })
    }

    /// §4.2.3.1 Parsing a Bare Item.
    fn bare_item(&mut self) -> Result<BareItem, ParseError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string().map(BareItem::String),
            Some(b) if b.is_ascii_alphabetic() || b == b'*' => Ok(BareItem::Token(self.token())),
            Some(b':') => self.byte_sequence().map(BareItem::ByteSequence),
            Some(b'?') => self.boolean().map(BareItem::Boolean),
            Some(b'@') => self.date().map(BareItem::Date),
            Some(b'%') => self.display_string().map(BareItem::DisplayString),
            _ => Err(self.fail(ParseErrorKind::UnknownItemType)),
        }
    }

    /// §4.2.3.2 Parsing Parameters.
    fn parameters(&mut self) -> Result<Parameters, ParseError> {
        let mut parameters = OrderedMap::new();
        while self.eat(b';') {
            self.skip_sp();
            let key = self.key()?;
            let value = if self.eat(b'=') {
                self.bare_item()?
            } else {
                BareItem::Boolean(true)
            };
            parameters.insert(key, value);
        }
        Ok(Parameters(parameters.entries))
    }

    /// §4.2.3.3 Parsing a Key.
    fn key(&mut self) -> Result<String, ParseError> {
        if !matches!(self.peek(), Some(b) if b.is_ascii_lowercase() || b == b'*') {
            return Err(self.fail(ParseErrorKind::Key));
        }
        let start = self.pos;
        while matches!(self.peek(), Some(b) if is_key_char(b)) {
            self.pos += 1;
        }
        Ok(ascii(self.since(start)))
    }

    /// §4.2.4 Parsing an Integer or Decimal.
    fn number(&mut self) -> Result<BareItem, ParseError> {
        let negative = self.eat(b'-');
        if !matches!(self.peek(), Some(b) if b.is_ascii_digit()) {
            return Err(self.fail(ParseErrorKind::Number));
        }
        // input_number is the integer digits, then "." and the fraction digits for a Decimal.
        let (mut integer, mut integer_digits) = (0i64, 0usize);
        let (mut fraction, mut fraction_digits) = (0i64, 0usize);
        let mut decimal = false;
        while let Some(b) = self.peek() {
            if b.is_ascii_digit() {
                self.pos += 1;
                let digit = i64::from(b - b'0');
                // At most 16 digits are ever held (checked below): no overflow.
                if decimal {
                    fraction = fraction * 10 + digit;
                    fraction_digits += 1;
                } else {
                    integer = integer * 10 + digit;
                    integer_digits += 1;
                }
            } else if !decimal && b == b'.' {
                if integer_digits > 12 {
                    return Err(self.fail(ParseErrorKind::Number));
                }
                self.pos += 1;
                decimal = true;
            } else {
                break;
            }
            let length = if decimal {
                integer_digits + 1 + fraction_digits
            } else {
                integer_digits
            };
            if (!decimal && length > 15) || (decimal && length > 16) {
                return Err(self.fail(ParseErrorKind::Number));
            }
        }
        let sign = if negative { -1 } else { 1 };
        if !decimal {
            return Ok(BareItem::Integer(sign * integer));
        }
        if fraction_digits == 0 || fraction_digits > 3 {
            return Err(self.fail(ParseErrorKind::Number));
        }
        let scale = match fraction_digits {
            1 => 100,
            2 => 10,
            _ => 1,
        };
        let thousandths = sign * (integer * 1000 + fraction * scale);
        Decimal::from_thousandths(thousandths)
            .map(BareItem::Decimal)
            .ok_or_else(|| self.fail(ParseErrorKind::Number))
    }

    /// §4.2.5 Parsing a String.
    fn string(&mut self) -> Result<String, ParseError> {
        if !self.eat(b'"') {
            return Err(self.fail(ParseErrorKind::String));
        }
        let mut output = String::new();
        while let Some(c) = self.next() {
            match c {
                b'\\' => match self.next() {
                    Some(escaped @ (b'"' | b'\\')) => output.push(char::from(escaped)),
                    _ => return Err(self.fail(ParseErrorKind::String)),
                },
                b'"' => return Ok(output),
                0x00..=0x1f | 0x7f.. => return Err(self.fail(ParseErrorKind::String)),
                _ => output.push(char::from(c)),
            }
        }
        Err(self.fail(ParseErrorKind::String))
    }

    /// §4.2.6 Parsing a Token (the first character was checked by the caller).
    fn token(&mut self) -> String {
        let start = self.pos;
        self.pos += 1;
        while matches!(self.peek(), Some(b) if is_tchar(b) || b == b':' || b == b'/') {
            self.pos += 1;
        }
        ascii(self.since(start))
    }

    /// §4.2.7 Parsing a Byte Sequence.
    fn byte_sequence(&mut self) -> Result<Vec<u8>, ParseError> {
        if !self.eat(b':') {
            return Err(self.fail(ParseErrorKind::ByteSequence));
        }
        let start = self.pos;
        while matches!(self.peek(), Some(b) if b != b':') {
            self.pos += 1;
        }
        let content = self.since(start);
        if !self.eat(b':') {
            return Err(self.fail(ParseErrorKind::ByteSequence));
        }
        if !content
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            return Err(self.fail(ParseErrorKind::ByteSequence));
        }
        LENIENT_BASE64
            .decode(content)
            .map_err(|_| self.fail(ParseErrorKind::ByteSequence))
    }

    /// §4.2.8 Parsing a Boolean.
    fn boolean(&mut self) -> Result<bool, ParseError> {
        if !self.eat(b'?') {
            return Err(self.fail(ParseErrorKind::Boolean));
        }
        if self.eat(b'1') {
            Ok(true)
        } else if self.eat(b'0') {
            Ok(false)
        } else {
            Err(self.fail(ParseErrorKind::Boolean))
        }
    }

    /// §4.2.9 Parsing a Date.
    fn date(&mut self) -> Result<i64, ParseError> {
        if !self.eat(b'@') {
            return Err(self.fail(ParseErrorKind::Date));
        }
        match self.number() {
            Ok(BareItem::Integer(seconds)) => Ok(seconds),
            _ => Err(self.fail(ParseErrorKind::Date)),
        }
    }

    /// §4.2.10 Parsing a Display String.
    fn display_string(&mut self) -> Result<String, ParseError> {
        if !(self.eat(b'%') && self.eat(b'"')) {
            return Err(self.fail(ParseErrorKind::DisplayString));
        }
        let mut bytes = Vec::new();
        while let Some(c) = self.next() {
            match c {
                0x00..=0x1f | 0x7f.. => return Err(self.fail(ParseErrorKind::DisplayString)),
                b'%' => {
                    let high = self.next().and_then(lower_hex);
                    let low = self.next().and_then(lower_hex);
                    match (high, low) {
                        (Some(high), Some(low)) => bytes.push(high << 4 | low),
                        _ => return Err(self.fail(ParseErrorKind::DisplayString)),
                    }
                }
                b'"' => {
                    return String::from_utf8(bytes)
                        .map_err(|_| self.fail(ParseErrorKind::DisplayString));
                }
                _ => bytes.push(c),
            }
        }
        Err(self.fail(ParseErrorKind::DisplayString))
    }
}

// -------------------------------------------------------------------------------------------
// Serializing (RFC 9651 §4.1)
// -------------------------------------------------------------------------------------------

/// The field value `?1` or `?0` (a Boolean Item, as `Upload-Complete` needs, R2).
pub fn boolean(value: bool) -> HeaderValue {
    HeaderValue::from_static(if value { "?1" } else { "?0" })
}

/// The field value of a non-negative Integer Item (as `Upload-Offset` and `Upload-Length`
/// need, R2).
///
/// # Errors
/// [`SerializeError`] above [`MAX_INTEGER`]: an sf-integer has at most fifteen digits.
pub fn integer(value: u64) -> Result<HeaderValue, SerializeError> {
    if value > MAX_INTEGER.unsigned_abs() {
        return Err(SerializeError("an integer has more than fifteen digits"));
    }
    Ok(crate::range::decimal(value))
}

/// Writes an Item as a field value (RFC 9651 §4.1.3).
///
/// # Errors
/// [`SerializeError`] when a part of it cannot be written: an integer or date out of range, a
/// key, token or string with characters the grammar does not allow.
pub fn serialize_item(item: &Item) -> Result<String, SerializeError> {
    let mut out = String::new();
    write_item(&mut out, item)?;
    Ok(out)
}

/// Writes a List as a field value (RFC 9651 §4.1.1).
///
/// # Errors
/// [`SerializeError`] for an empty List (the field is then left out) or a member that cannot
/// be written.
pub fn serialize_list(list: &[Member]) -> Result<String, SerializeError> {
    if list.is_empty() {
        return Err(SerializeError(
            "an empty list is written by leaving the field out",
        ));
    }
    let mut out = String::new();
    for (n, member) in list.iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        write_member(&mut out, member)?;
    }
    Ok(out)
}

/// Writes a Dictionary as a field value (RFC 9651 §4.1.2); members that are `?1` are written
/// as their bare key.
///
/// # Errors
/// [`SerializeError`] for an empty Dictionary (the field is then left out) or a member that
/// cannot be written.
pub fn serialize_dictionary(dictionary: &Dictionary) -> Result<String, SerializeError> {
    if dictionary.is_empty() {
        return Err(SerializeError(
            "an empty dictionary is written by leaving the field out",
        ));
    }
    let mut out = String::new();
    for (n, (key, member)) in dictionary.iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        write_key(&mut out, key)?;
        match member {
            Member::Item(Item {
                bare: BareItem::Boolean(true),
                params,
            }) => write_parameters(&mut out, params)?,
            _ => {
                out.push('=');
                write_member(&mut out, member)?;
            }
        }
    }
    Ok(out)
}

fn write_member(out: &mut String, member: &Member) -> Result<(), SerializeError> {
    match member {
        Member::Item(item) => write_item(out, item),
        Member::InnerList(list) => {
            out.push('(');
            for (n, item) in list.items.iter().enumerate() {
                if n > 0 {
                    out.push(' ');
                }
                write_item(out, item)?;
            }
            out.push(')');
            write_parameters(out, &list.params)
        }
    }
}

fn write_item(out: &mut String, item: &Item) -> Result<(), SerializeError> {
    write_bare_item(out, &item.bare)?;
    write_parameters(out, &item.params)
}

fn write_parameters(out: &mut String, params: &Parameters) -> Result<(), SerializeError> {
    for (key, value) in params.iter() {
        out.push(';');
        write_key(out, key)?;
        if *value != BareItem::Boolean(true) {
            out.push('=');
            write_bare_item(out, value)?;
        }
    }
    Ok(())
}

fn write_key(out: &mut String, key: &str) -> Result<(), SerializeError> {
    let bytes = key.as_bytes();
    let valid = matches!(bytes.first(), Some(&b) if b.is_ascii_lowercase() || b == b'*')
        && bytes.iter().all(|&b| is_key_char(b));
    if !valid {
        return Err(SerializeError("a key that the grammar does not allow"));
    }
    out.push_str(key);
    Ok(())
}

fn write_integer(out: &mut String, n: i64) -> Result<(), SerializeError> {
    if n.unsigned_abs() > MAX_INTEGER.unsigned_abs() {
        return Err(SerializeError("an integer has more than fifteen digits"));
    }
    let _ = write!(out, "{n}");
    Ok(())
}

fn write_bare_item(out: &mut String, bare: &BareItem) -> Result<(), SerializeError> {
    match bare {
        BareItem::Integer(n) => write_integer(out, *n)?,
        BareItem::Decimal(d) => {
            let t = d.thousandths();
            if t < 0 {
                out.push('-');
            }
            let (whole, fraction) = (t.unsigned_abs() / 1000, t.unsigned_abs() % 1000);
            let _ = write!(out, "{whole}.");
            if fraction == 0 {
                out.push('0');
            } else {
                let digits = format!("{fraction:03}");
                out.push_str(digits.trim_end_matches('0'));
            }
        }
        BareItem::String(s) => {
            if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                return Err(SerializeError(
                    "a string has a character that is not printable ASCII",
                ));
            }
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        BareItem::Token(t) => {
            let bytes = t.as_bytes();
            let valid = matches!(bytes.first(), Some(&b) if b.is_ascii_alphabetic() || b == b'*')
                && bytes.iter().all(|&b| is_tchar(b) || b == b':' || b == b'/');
            if !valid {
                return Err(SerializeError("a token that the grammar does not allow"));
            }
            out.push_str(t);
        }
        BareItem::ByteSequence(bytes) => {
            out.push(':');
            STANDARD.encode_string(bytes, out);
            out.push(':');
        }
        BareItem::Boolean(b) => out.push_str(if *b { "?1" } else { "?0" }),
        BareItem::Date(seconds) => {
            out.push('@');
            write_integer(out, *seconds)?;
        }
        BareItem::DisplayString(s) => {
            out.push_str("%\"");
            for b in s.bytes() {
                if b == b'%' || b == b'"' || !(0x20..=0x7e).contains(&b) {
                    let _ = write!(out, "%{b:02x}");
                } else {
                    out.push(char::from(b));
                }
            }
            out.push('"');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn int(n: i64) -> Item {
        Item::new(BareItem::Integer(n))
    }

    fn token(t: &str) -> BareItem {
        BareItem::Token(t.into())
    }

    fn params(pairs: &[(&str, BareItem)]) -> Parameters {
        let mut p = Parameters::new();
        for (k, v) in pairs {
            p.insert(*k, v.clone());
        }
        p
    }

    fn dict(text: &str) -> Dictionary {
        parse_dictionary(text.as_bytes()).expect("a valid dictionary")
    }

    fn item(text: &str) -> Item {
        parse_item(text.as_bytes()).expect("a valid item")
    }

    fn fails_item(text: &[u8]) -> ParseErrorKind {
        parse_item(text).expect_err("must fail").kind
    }

    // R2: the item types, from the examples of RFC 9651 §3.3.
    #[test]
    fn rfc9651_item_examples_r2() {
        assert_eq!(item("42"), int(42));
        assert_eq!(
            item("5; foo=bar"),
            Item {
                bare: BareItem::Integer(5),
                params: params(&[("foo", token("bar"))]),
            }
        );
        assert_eq!(
            item("4.5").bare,
            BareItem::Decimal(Decimal::from_thousandths(4500).unwrap())
        );
        assert_eq!(
            item("\"hello world\"").bare,
            BareItem::String("hello world".into())
        );
        assert_eq!(item("foo123/456").bare, token("foo123/456"));
        assert_eq!(
            item(":cHJldGVuZCB0aGlzIGlzIGJpbmFyeSBjb250ZW50Lg==:").bare,
            BareItem::ByteSequence(b"pretend this is binary content.".to_vec())
        );
        assert_eq!(item("?1").bare, BareItem::Boolean(true));
        assert_eq!(item("@1659578233").bare, BareItem::Date(1_659_578_233));
        assert_eq!(
            item("%\"This is intended for display to %c3%bcsers.\"").bare,
            BareItem::DisplayString("This is intended for display to üsers.".into())
        );
        // §2, the Foo-Example field.
        let foo = item("2; foourl=\"https://foo.example.com/\"");
        assert_eq!(foo.bare, BareItem::Integer(2));
        assert_eq!(
            foo.params.get("foourl"),
            Some(&BareItem::String("https://foo.example.com/".into()))
        );
        // §3.1.2: a parameter without a value is true.
        let p = item("1; a; b=?0").params;
        assert_eq!(p.get("a"), Some(&BareItem::Boolean(true)));
        assert_eq!(p.get("b"), Some(&BareItem::Boolean(false)));
    }

    // R11: the dictionary examples of RFC 9651 §3.2.
    #[test]
    fn rfc9651_dictionary_examples_r11() {
        let d = dict("en=\"Applepie\", da=:w4ZibGV0w6ZydGU=:");
        assert_eq!(d.len(), 2);
        assert_eq!(
            d.get("en"),
            Some(&Member::Item(Item::new(BareItem::String(
                "Applepie".into()
            ))))
        );
        assert_eq!(
            d.get("da"),
            Some(&Member::Item(Item::new(BareItem::ByteSequence(
                "Æbletærte".as_bytes().to_vec()
            ))))
        );

        let d = dict("a=?0, b, c; foo=bar");
        assert_eq!(
            d.get("a").and_then(Member::as_item).map(|i| &i.bare),
            Some(&BareItem::Boolean(false))
        );
        assert_eq!(
            d.get("b"),
            Some(&Member::Item(Item::new(BareItem::Boolean(true))))
        );
        assert_eq!(
            d.get("c"),
            Some(&Member::Item(Item {
                bare: BareItem::Boolean(true),
                params: params(&[("foo", token("bar"))]),
            }))
        );

        let d = dict("rating=1.5, feelings=(joy sadness)");
        assert_eq!(
            d.get("rating"),
            Some(&Member::Item(Item::new(BareItem::Decimal(
                Decimal::from_thousandths(1500).unwrap()
            ))))
        );
        assert_eq!(
            d.get("feelings"),
            Some(&Member::InnerList(InnerList {
                items: vec![Item::new(token("joy")), Item::new(token("sadness"))],
                params: Parameters::new(),
            }))
        );

        let d = dict("a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid");
        let keys: Vec<_> = d.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "c", "d"]);
        assert_eq!(
            d.get("d"),
            Some(&Member::InnerList(InnerList {
                items: vec![int(5), int(6)],
                params: params(&[("valid", BareItem::Boolean(true))]),
            }))
        );
        assert_eq!(
            d.get("c"),
            Some(&Member::Item(Item {
                bare: BareItem::Integer(4),
                params: params(&[("aa", token("bb"))]),
            }))
        );
    }

    // RFC 9651 §3.1, §3.1.1, §3.1.2: the list examples.
    #[test]
    fn rfc9651_list_examples() {
        let l = parse_list(b"sugar, tea, rum").unwrap();
        assert_eq!(
            l,
            ["sugar", "tea", "rum"].map(|t| Member::Item(Item::new(token(t))))
        );
        let l = parse_list(br#"("foo" "bar"), ("baz"), ("bat" "one"), ()"#).unwrap();
        assert_eq!(l.len(), 4);
        assert_eq!(l[3], Member::InnerList(InnerList::default()));
        let l = parse_list(br#"("foo"; a=1;b=2);lvl=5, ("bar" "baz");lvl=1"#).unwrap();
        let Member::InnerList(first) = &l[0] else {
            panic!("an inner list")
        };
        assert_eq!(first.params.get("lvl"), Some(&BareItem::Integer(5)));
        assert_eq!(first.items[0].params.get("b"), Some(&BareItem::Integer(2)));
        let l = parse_list(br#"abc;a=1;b=2; cde_456, (ghi;jk=4 l);q="9";r=w"#).unwrap();
        let Member::Item(abc) = &l[0] else {
            panic!("an item")
        };
        assert_eq!(abc.params.get("cde_456"), Some(&BareItem::Boolean(true)));
        let Member::InnerList(ghi) = &l[1] else {
            panic!("an inner list")
        };
        assert_eq!(ghi.params.get("r"), Some(&token("w")));
        assert_eq!(ghi.items[1].bare, token("l"));
    }

    // RFC 9651 §4.2: several field lines are one value joined by commas.
    #[test]
    fn several_field_lines_combine_for_dictionaries_and_lists() {
        let mut headers = HeaderMap::new();
        headers.append("example-dict", HeaderValue::from_static("foo=1"));
        headers.append("example-dict", HeaderValue::from_static("bar=2"));
        assert_eq!(
            dictionary_field(&headers, "example-dict").unwrap(),
            Some(dict("foo=1, bar=2"))
        );
        headers.append("example-list", HeaderValue::from_static("sugar, tea"));
        headers.append("example-list", HeaderValue::from_static("rum"));
        assert_eq!(
            list_field(&headers, "example-list").unwrap().unwrap().len(),
            3
        );
        // An Item split across lines is no longer one Item (R2: the field is ignored).
        headers.append("upload-offset", HeaderValue::from_static("5"));
        assert_eq!(item_field(&headers, "upload-offset").unwrap(), Some(int(5)));
        headers.append("upload-offset", HeaderValue::from_static("5"));
        assert!(item_field(&headers, "upload-offset").is_err());
        assert_eq!(item_field(&headers, "upload-length"), Ok(None));
        assert_eq!(dictionary_field(&headers, "upload-limit"), Ok(None));
    }

    #[test]
    fn whitespace_rules_follow_rfc9651() {
        // Leading and trailing SP around the whole field; tabs only around commas.
        assert_eq!(item("  42  "), int(42));
        assert_eq!(fails_item(b"\t42"), ParseErrorKind::UnknownItemType);
        assert_eq!(fails_item(b"42\t"), ParseErrorKind::TrailingCharacters);
        assert_eq!(dict("a=1 , b=2"), dict("a=1, b=2"));
        assert_eq!(dict("a=1\t,\tb=2"), dict("a=1, b=2"));
        assert_eq!(dict("a=1,b=2").len(), 2);
        assert_eq!(dict("  a=1"), dict("a=1"));
        // No space around "=" in a dictionary.
        assert!(parse_dictionary(b"a =1").is_err());
        assert!(parse_dictionary(b"a= 1").is_err());
        // SP is allowed after ";" only.
        assert_eq!(item("1; a=2").params.get("a"), Some(&BareItem::Integer(2)));
        assert!(parse_item(b"1 ;a=2").is_err());
        // Inner lists: one or more SP between items, also before ")".
        assert_eq!(
            dict("a=(  1   2 )").get("a"),
            Some(&Member::InnerList(InnerList {
                items: vec![int(1), int(2)],
                params: Parameters::new(),
            }))
        );
        assert!(parse_dictionary(b"a=(1\t2)").is_err());
        assert!(parse_dictionary(b"a=(1,2)").is_err());
        assert!(parse_dictionary(b"a=(1 2").is_err());
    }

    #[test]
    fn empty_and_trailing_comma_dictionaries() {
        assert!(dict("").is_empty());
        assert!(dict("   ").is_empty());
        assert_eq!(
            parse_dictionary(b"a=1,").unwrap_err().kind,
            ParseErrorKind::TrailingComma
        );
        assert_eq!(
            parse_dictionary(b"a=1, ").unwrap_err().kind,
            ParseErrorKind::TrailingComma
        );
        assert!(parse_dictionary(b",a=1").is_err());
        assert!(parse_dictionary(b"a=1,,b=2").is_err());
        assert_eq!(
            parse_dictionary(b"a=1 b=2").unwrap_err().kind,
            ParseErrorKind::ExpectedComma
        );
        assert!(parse_list(b"").unwrap().is_empty());
        assert!(parse_list(b"1,").is_err());
        // An empty Item is not an Item.
        assert_eq!(fails_item(b""), ParseErrorKind::UnknownItemType);
    }

    // RFC 9651 §4.2.2: a repeated key's last value wins, in the first one's place.
    #[test]
    fn duplicate_dictionary_keys_last_wins() {
        let d = dict("a=1, b=2, a=3");
        let members: Vec<_> = d.iter().map(|(k, m)| (k, m.clone())).collect();
        assert_eq!(
            members,
            [("a", Member::Item(int(3))), ("b", Member::Item(int(2)))]
        );
        assert_eq!(
            item("1;a=1;a=2").params.get("a"),
            Some(&BareItem::Integer(2))
        );
        assert_eq!(item("1;a=1;a=2").params.len(), 1);
    }

    // R2: sf-integers have at most fifteen digits.
    #[test]
    fn integer_limits_r2() {
        assert_eq!(item("999999999999999"), int(MAX_INTEGER));
        assert_eq!(item("-999999999999999"), int(-MAX_INTEGER));
        assert_eq!(fails_item(b"1000000000000000"), ParseErrorKind::Number);
        assert_eq!(fails_item(b"-1000000000000000"), ParseErrorKind::Number);
        assert_eq!(item("000000000000042"), int(42));
        assert_eq!(fails_item(b"0000000000000042"), ParseErrorKind::Number);
        assert_eq!(item("-0"), int(0));
        assert_eq!(fails_item(b"-"), ParseErrorKind::Number);
        assert_eq!(fails_item(b"- 1"), ParseErrorKind::Number);
        assert_eq!(fails_item(b"+1"), ParseErrorKind::UnknownItemType);
        assert_eq!(fails_item(b"1_000"), ParseErrorKind::TrailingCharacters);
        assert_eq!(fails_item(b"0x10"), ParseErrorKind::TrailingCharacters);
    }

    #[test]
    fn decimal_limits() {
        let dec = |t| BareItem::Decimal(Decimal::from_thousandths(t).unwrap());
        assert_eq!(item("123456789012.123").bare, dec(123_456_789_012_123));
        assert_eq!(item("-0.5").bare, dec(-500));
        assert_eq!(item("1.05").bare, dec(1050));
        assert_eq!(fails_item(b"1234567890123.0"), ParseErrorKind::Number);
        assert_eq!(fails_item(b"1.1234"), ParseErrorKind::Number);
        assert_eq!(fails_item(b"1."), ParseErrorKind::Number);
        assert_eq!(fails_item(b"1.2.3"), ParseErrorKind::TrailingCharacters);
        assert_eq!(fails_item(b".5"), ParseErrorKind::UnknownItemType);
        assert_eq!(Decimal::from_thousandths(MAX_INTEGER + 1), None);
    }

    #[test]
    fn strings_tokens_and_booleans() {
        assert_eq!(
            item(r#""a\"b\\c""#).bare,
            BareItem::String(r#"a"b\c"#.into())
        );
        assert_eq!(fails_item(br#""a\b""#), ParseErrorKind::String);
        assert_eq!(fails_item(b"\"abc"), ParseErrorKind::String);
        assert_eq!(fails_item(b"\"a\tb\""), ParseErrorKind::String);
        assert_eq!(fails_item(b"'abc'"), ParseErrorKind::UnknownItemType);
        assert_eq!(fails_item("\"é\"".as_bytes()), ParseErrorKind::NotAscii);
        assert_eq!(item("*foo").bare, token("*foo"));
        assert_eq!(
            item("a:b/c!#$%&'*+-.^_`|~").bare,
            token("a:b/c!#$%&'*+-.^_`|~")
        );
        assert_eq!(fails_item(b"a,b"), ParseErrorKind::TrailingCharacters);
        assert_eq!(item("?0").bare, BareItem::Boolean(false));
        // R2: `true` is a Token, not a Boolean; `?2` and `?` are nothing.
        assert_eq!(item("true").bare, token("true"));
        assert_eq!(fails_item(b"?2"), ParseErrorKind::Boolean);
        assert_eq!(fails_item(b"?"), ParseErrorKind::Boolean);
        assert_eq!(fails_item(b"?11"), ParseErrorKind::TrailingCharacters);
    }

    #[test]
    fn byte_sequences_accept_what_rfc9651_asks() {
        assert_eq!(
            item(":aGVsbG8=:").bare,
            BareItem::ByteSequence(b"hello".to_vec())
        );
        assert_eq!(item("::").bare, BareItem::ByteSequence(Vec::new()));
        // Parsers SHOULD NOT fail on missing padding or non-zero pad bits (§4.2.7).
        assert_eq!(
            item(":aGVsbG8:").bare,
            BareItem::ByteSequence(b"hello".to_vec())
        );
        assert_eq!(item(":iZ==:").bare, BareItem::ByteSequence(vec![0x89]));
        assert_eq!(fails_item(b":aGVsbG8="), ParseErrorKind::ByteSequence);
        assert_eq!(fails_item(b":aGVsb G8=:"), ParseErrorKind::ByteSequence);
        assert_eq!(fails_item(b":aGVsbG!8=:"), ParseErrorKind::ByteSequence);
        assert_eq!(fails_item(b":_-Ah:"), ParseErrorKind::ByteSequence);
        assert_eq!(fails_item(b":=aGVsbG8=:"), ParseErrorKind::ByteSequence);
        assert_eq!(fails_item(b":a=GVsbG8=:"), ParseErrorKind::ByteSequence);
    }

    #[test]
    fn dates_and_display_strings() {
        assert_eq!(item("@-62135596800").bare, BareItem::Date(-62_135_596_800));
        assert_eq!(fails_item(b"@1.5"), ParseErrorKind::Date);
        assert_eq!(fails_item(b"@"), ParseErrorKind::Date);
        assert_eq!(fails_item(b"@1000000000000000"), ParseErrorKind::Date);
        assert_eq!(
            item(r#"%"foo %22bar%22 \ baz""#).bare,
            BareItem::DisplayString(r#"foo "bar" \ baz"#.into())
        );
        // Only lower-case hex (§4.2.10), valid UTF-8, no control characters.
        assert_eq!(fails_item(b"%\"f%C3%BC\""), ParseErrorKind::DisplayString);
        assert_eq!(fails_item(b"%\"%c3%28\""), ParseErrorKind::DisplayString);
        assert_eq!(fails_item(b"%\"\t\""), ParseErrorKind::DisplayString);
        assert_eq!(fails_item(b"%\"foo %a"), ParseErrorKind::DisplayString);
        assert_eq!(fails_item(b"%\"foo"), ParseErrorKind::DisplayString);
        assert_eq!(fails_item(b"%foo"), ParseErrorKind::DisplayString);
    }

    #[test]
    fn keys_are_lowercase() {
        assert!(parse_dictionary(b"A=1").is_err());
        assert!(parse_dictionary(b"1a=1").is_err());
        assert!(parse_dictionary(b"_a=1").is_err());
        assert_eq!(dict("*a._-9=1").len(), 1);
        // A key stops at the first character it cannot hold; what follows must then fit.
        assert!(parse_dictionary(b"aB=1").is_err());
        assert!(parse_item(b"1;A=1").is_err());
    }

    #[test]
    fn canonical_serialization() {
        assert_eq!(
            serialize_dictionary(&dict("a=1 ,b=?1;x=?1, c=(1  2);q=\"9\"")).unwrap(),
            "a=1, b;x, c=(1 2);q=\"9\""
        );
        assert_eq!(serialize_item(&item("-0.50")).unwrap(), "-0.5");
        assert_eq!(serialize_item(&item("3.000")).unwrap(), "3.0");
        assert_eq!(serialize_item(&item(":aGVsbG8:")).unwrap(), ":aGVsbG8=:");
        assert_eq!(
            serialize_item(&item("%\"f%c3%bc \\ %25\"")).unwrap(),
            "%\"f%c3%bc \\ %25\""
        );
        assert_eq!(
            serialize_list(&parse_list(b"a,  b").unwrap()).unwrap(),
            "a, b"
        );
        assert!(serialize_dictionary(&Dictionary::new()).is_err());
        assert!(serialize_list(&[]).is_err());
        assert!(serialize_item(&int(MAX_INTEGER + 1)).is_err());
        assert!(serialize_item(&Item::new(BareItem::String("é".into()))).is_err());
        assert!(serialize_item(&Item::new(BareItem::Token("1a".into()))).is_err());
        let mut bad_key = Dictionary::new();
        bad_key.insert("Key", Member::Item(int(1)));
        assert!(serialize_dictionary(&bad_key).is_err());
    }

    // R2: what a client sends.
    #[test]
    fn writers_r2() {
        assert_eq!(boolean(true), "?1");
        assert_eq!(boolean(false), "?0");
        assert_eq!(integer(0).unwrap(), "0");
        assert_eq!(integer(999_999_999_999_999).unwrap(), "999999999999999");
        assert!(integer(1_000_000_000_000_000).is_err());
        assert!(integer(u64::MAX).is_err());
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        "[a-z*][a-z0-9_.*-]{0,6}"
    }

    fn bare_strategy() -> impl Strategy<Value = BareItem> {
        prop_oneof![
            (-MAX_INTEGER..=MAX_INTEGER).prop_map(BareItem::Integer),
            (-MAX_INTEGER..=MAX_INTEGER).prop_map(|t| BareItem::Decimal(
                Decimal::from_thousandths(t).unwrap_or(Decimal(0))
            )),
            "[ -~]{0,12}".prop_map(BareItem::String),
            "[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/-]{0,8}".prop_map(BareItem::Token),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(BareItem::ByteSequence),
            any::<bool>().prop_map(BareItem::Boolean),
            (-MAX_INTEGER..=MAX_INTEGER).prop_map(BareItem::Date),
            any::<String>().prop_map(BareItem::DisplayString),
        ]
    }

    fn params_strategy() -> impl Strategy<Value = Parameters> {
        proptest::collection::vec((key_strategy(), bare_strategy()), 0..3).prop_map(|pairs| {
            let mut p = Parameters::new();
            for (k, v) in pairs {
                p.insert(k, v);
            }
            p
        })
    }

    fn item_strategy() -> impl Strategy<Value = Item> {
        (bare_strategy(), params_strategy()).prop_map(|(bare, params)| Item { bare, params })
    }

    fn member_strategy() -> impl Strategy<Value = Member> {
        prop_oneof![
            item_strategy().prop_map(Member::Item),
            (
                proptest::collection::vec(item_strategy(), 0..3),
                params_strategy()
            )
                .prop_map(|(items, params)| Member::InnerList(InnerList { items, params })),
        ]
    }

    proptest! {
        // A written value parses back to itself (R2, R11).
        #[test]
        fn written_items_parse_back(value in item_strategy()) {
            let text = serialize_item(&value).unwrap();
            prop_assert_eq!(parse_item(text.as_bytes()).unwrap(), value);
        }

        #[test]
        fn written_dictionaries_parse_back(
            pairs in proptest::collection::vec((key_strategy(), member_strategy()), 1..5)
        ) {
            let mut value = Dictionary::new();
            for (k, m) in pairs {
                value.insert(k, m);
            }
            let text = serialize_dictionary(&value).unwrap();
            prop_assert_eq!(parse_dictionary(text.as_bytes()).unwrap(), value);
        }

        #[test]
        fn written_lists_parse_back(value in proptest::collection::vec(member_strategy(), 1..5)) {
            let text = serialize_list(&value).unwrap();
            prop_assert_eq!(parse_list(text.as_bytes()).unwrap(), value);
        }

        // R2: the integer and boolean writers.
        #[test]
        fn written_integers_parse_back(n in 0..=MAX_INTEGER.unsigned_abs()) {
            let value = integer(n).unwrap();
            let parsed = parse_item(value.as_bytes()).unwrap();
            prop_assert_eq!(parsed.bare.as_integer().map(i64::unsigned_abs), Some(n));
        }

        // Any bytes: never a panic, and what parses writes back to the same value.
        #[test]
        fn arbitrary_fields_parse_or_fail_cleanly(text in "[a-z0-9 ,;=()?:*\"%@.\\-\t]{0,24}") {
            if let Ok(d) = parse_dictionary(text.as_bytes())
                && !d.is_empty() {
                    let written = serialize_dictionary(&d).unwrap();
                    prop_assert_eq!(parse_dictionary(written.as_bytes()).unwrap(), d);
                }
            if let Ok(i) = parse_item(text.as_bytes()) {
                let written = serialize_item(&i).unwrap();
                prop_assert_eq!(parse_item(written.as_bytes()).unwrap(), i);
            }
        }
    }

    /// Structured-field text: the characters the grammar gives meaning to, and a few it does
    /// not.
    const FIELD_CHARS: &str = "[a-zA-Z0-9 ,;=()?:*\"%@.\\-\t\\\\/+_!~]";

    /// A valid field with one character deleted, replaced or inserted.
    fn mutated(text: String, at: usize, change: u8, with: char) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        let at = at % (chars.len() + 1);
        match change % 3 {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 if at < chars.len() => chars[at] = with,
            _ => chars.insert(at, with),
        }
        chars.into_iter().collect()
    }

    /// Our answer and the sfv crate's, each as the canonical serialization of what parsed.
    fn both_dictionaries(text: &str) -> (Option<Option<String>>, Option<Option<String>>) {
        use sfv_oracle::FieldType as _;
        let ours = parse_dictionary(text.as_bytes())
            .ok()
            .map(|d| serialize_dictionary(&d).ok());
        let theirs = sfv_oracle::Parser::new(text)
            .parse::<sfv_oracle::Dictionary>()
            .ok()
            .map(|d| d.serialize());
        (ours, theirs)
    }

    fn both_items(text: &str) -> (Option<String>, Option<String>) {
        use sfv_oracle::FieldType as _;
        let ours = parse_item(text.as_bytes())
            .ok()
            .and_then(|i| serialize_item(&i).ok());
        let theirs = sfv_oracle::Parser::new(text)
            .parse::<sfv_oracle::Item>()
            .ok()
            .map(|i| i.serialize());
        (ours, theirs)
    }

    fn both_lists(text: &str) -> (Option<Option<String>>, Option<Option<String>>) {
        use sfv_oracle::FieldType as _;
        let ours = parse_list(text.as_bytes())
            .ok()
            .map(|l| serialize_list(&l).ok());
        let theirs = sfv_oracle::Parser::new(text)
            .parse::<sfv_oracle::List>()
            .ok()
            .map(|l| l.serialize());
        (ours, theirs)
    }

    proptest! {
        // Differential: accepted and refused alike, and the same value when accepted.
        #[test]
        fn random_fields_agree_with_the_sfv_crate(text in proptest::string::string_regex(&format!("{FIELD_CHARS}{{0,24}}")).unwrap()) {
            let (ours, theirs) = both_dictionaries(&text);
            prop_assert_eq!(ours, theirs, "dictionary {:?}", text);
            let (ours, theirs) = both_items(&text);
            prop_assert_eq!(ours, theirs, "item {:?}", text);
            let (ours, theirs) = both_lists(&text);
            prop_assert_eq!(ours, theirs, "list {:?}", text);
        }

        #[test]
        fn mutated_dictionaries_agree_with_the_sfv_crate(
            pairs in proptest::collection::vec((key_strategy(), member_strategy()), 1..4),
            at in any::<usize>(),
            change in any::<u8>(),
            with in proptest::string::string_regex(FIELD_CHARS).unwrap(),
        ) {
            let mut value = Dictionary::new();
            for (k, m) in pairs {
                value.insert(k, m);
            }
            let text = serialize_dictionary(&value).unwrap();
            let text = mutated(text, at, change, with.chars().next().unwrap_or(' '));
            let (ours, theirs) = both_dictionaries(&text);
            prop_assert_eq!(ours, theirs, "dictionary {:?}", text);
            let (ours, theirs) = both_lists(&text);
            prop_assert_eq!(ours, theirs, "list {:?}", text);
        }

        #[test]
        fn mutated_items_agree_with_the_sfv_crate(
            value in item_strategy(),
            at in any::<usize>(),
            change in any::<u8>(),
            with in proptest::string::string_regex(FIELD_CHARS).unwrap(),
        ) {
            let text = serialize_item(&value).unwrap();
            let text = mutated(text, at, change, with.chars().next().unwrap_or(' '));
            let (ours, theirs) = both_items(&text);
            prop_assert_eq!(ours, theirs, "item {:?}", text);
        }
    }

    #[test]
    fn many_repeated_keys_keep_the_first_place_and_the_last_value() {
        // 20,000 members, half of them repeats (found through the index, not by scanning).
        let mut text = String::new();
        for n in 0..20_000 {
            if n > 0 {
                text.push_str(", ");
            }
            let _ = write!(text, "k{}={n}", n % 10_000);
        }
        let d = dict(&text);
        assert_eq!(d.len(), 10_000);
        assert_eq!(d.get("k0"), Some(&Member::Item(int(10_000))));
    }
}
