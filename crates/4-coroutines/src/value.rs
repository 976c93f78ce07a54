//! Python values as the interpreter session shows them: what is sent in, yielded and
//! returned, read from a command line and printed with Python's `repr` and `str`.

/// A Python value, as far as the session needs: what is sent in, yielded and returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`
    None,
    /// `5`
    Int(i64),
    /// `4.5`
    Float(f64),
    /// `'text'`
    Str(String),
}

impl Value {
    /// Reads a Python literal — `5`, `4.5`, `None`, `'text'`, `"text"` — or, for
    /// convenience, bare text as a string.
    pub fn parse(text: &str) -> Value {
        let quoted =
            |quote: char| text.len() >= 2 && text.starts_with(quote) && text.ends_with(quote);
        if quoted('\'') || quoted('"') {
            return Value::Str(text[1..text.len() - 1].to_string());
        }
        if text == "None" {
            return Value::None;
        }
        if let Ok(int) = text.parse() {
            return Value::Int(int);
        }
        match text.parse() {
            Ok(float) => Value::Float(float),
            Err(_) => Value::Str(text.to_string()),
        }
    }

    /// `str(value)`, as `print` shows it: `None`, `5`, `7.5`, `text`.
    pub fn str(&self) -> String {
        match self {
            Value::None => "None".to_string(),
            Value::Int(int) => int.to_string(),
            Value::Float(float) => float_repr(*float),
            Value::Str(text) => text.clone(),
        }
    }

    /// `repr(value)`, as the interpreter echoes a result: strings get quotes.
    pub fn repr(&self) -> String {
        match self {
            Value::Str(text) => str_repr(text),
            other => other.str(),
        }
    }

    /// What a coroutine taking `Option<String>` receives: `None`, or `str(value)`.
    pub fn into_text(self) -> Option<String> {
        match self {
            Value::None => None,
            Value::Str(text) => Some(text),
            other => Some(other.str()),
        }
    }
}

impl From<()> for Value {
    fn from((): ()) -> Value {
        Value::None
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Str(text.to_string())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Str(text)
    }
}

impl From<Option<f64>> for Value {
    fn from(number: Option<f64>) -> Value {
        number.map_or(Value::None, Value::Float)
    }
}

/// Python's float repr: shortest round-trip digits, always with a `.0` or an exponent
/// (`5.0`, `6.33`, `1e+16`). Rust's `{:?}` is the same but for the exponent's form.
fn float_repr(x: f64) -> String {
    let debug = format!("{x:?}");
    match debug.split_once('e') {
        Some((mantissa, exponent)) => {
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(digits) => ('-', digits),
                None => ('+', exponent),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None if debug == "NaN" => "nan".to_string(),
        None => debug,
    }
}

/// Python's str repr: single quotes, unless the text has some and no double ones.
fn str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut repr = String::from(quote);
    for c in text.chars() {
        match c {
            '\\' => repr.push_str("\\\\"),
            '\n' => repr.push_str("\\n"),
            '\r' => repr.push_str("\\r"),
            '\t' => repr.push_str("\\t"),
            c if c == quote => {
                repr.push('\\');
                repr.push(c);
            }
            c if c.is_control() => repr.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => repr.push(c),
        }
    }
    repr.push(quote);
    repr
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sent values are read as Python literals, bare text as a string.
    #[test]
    fn parses_python_literals() {
        assert_eq!(Value::parse("5"), Value::Int(5));
        assert_eq!(Value::parse("4.5"), Value::Float(4.5));
        assert_eq!(Value::parse("None"), Value::None);
        assert_eq!(
            Value::parse("'hello world'"),
            Value::Str("hello world".into())
        );
        assert_eq!(Value::parse("\"x\""), Value::Str("x".into()));
        assert_eq!(Value::parse("example"), Value::Str("example".into()));
    }

    /// Values print as Python's repr and str do.
    #[test]
    fn prints_like_python() {
        assert_eq!(Value::Float(5.0).repr(), "5.0");
        assert_eq!(Value::Float(6.33).repr(), "6.33");
        assert_eq!(Value::Float(1e16).repr(), "1e+16");
        assert_eq!(Value::Float(1e-5).repr(), "1e-05");
        assert_eq!(Value::from("Ready.").repr(), "'Ready.'");
        assert_eq!(Value::from("it's").repr(), "\"it's\"");
        assert_eq!(Value::from("a'b\"c\n").repr(), "'a\\'b\"c\\n'");
        assert_eq!(Value::from("Ready.").str(), "Ready.");
    }
}
