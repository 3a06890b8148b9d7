//! Protobuf's text format, as TensorFlow Serving's config files are written: fields and nested
//! messages, each read into a tree that the reader of one message type then walks, refusing the
//! fields it does not know by name. Hand-written: the files are small and only their field names
//! and scalars matter, where a protobuf reflection crate would need every message's descriptor.

fn error<T>(message: impl Into<String>) -> Result<T, String> {
    Err(message.into())
}

/// A text-format field value: a scalar (kept as its text) or a nested message.
#[derive(Debug)]
pub(crate) enum Value {
    Scalar(String),
    Message(Vec<(String, Value)>),
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    Colon,
    Separator,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => while chars.next().is_some_and(|c| c != '\n') {},
            '{' | '<' => {
                chars.next();
                tokens.push(Token::Open);
            }
            '}' | '>' => {
                chars.next();
                tokens.push(Token::Close);
            }
            ':' => {
                chars.next();
                tokens.push(Token::Colon);
            }
            ';' | ',' => {
                chars.next();
                tokens.push(Token::Separator);
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return error("a string is not closed"),
                        Some(q) if q == c => break,
                        Some('\\') => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(other) => s.push(other),
                            None => return error("a string is not closed"),
                        },
                        Some(other) => s.push(other),
                    }
                }
                tokens.push(Token::Text(s));
            }
            // An Any's expanded name, `[type.googleapis.com/package.Message]`, is one field name.
            '[' => {
                let mut s = String::new();
                for c in chars.by_ref() {
                    s.push(c);
                    if c == ']' {
                        break;
                    }
                }
                if !s.ends_with(']') {
                    return error("a '[' is not closed");
                }
                tokens.push(Token::Word(s));
            }
            c if c.is_alphanumeric() || "_.-+".contains(c) => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_alphanumeric() || "_.-+".contains(c) {
                        s.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(s));
            }
            other => return error(format!("unexpected character '{other}'")),
        }
    }
    Ok(tokens)
}

fn parse_message(
    tokens: &[Token],
    pos: &mut usize,
    nested: bool,
) -> Result<Vec<(String, Value)>, String> {
    let mut fields = Vec::new();
    loop {
        match tokens.get(*pos) {
            None if nested => return error("a '{' is not closed"),
            None => return Ok(fields),
            Some(Token::Close) if nested => {
                *pos += 1;
                return Ok(fields);
            }
            Some(Token::Separator) => *pos += 1,
            Some(Token::Word(name)) => {
                *pos += 1;
                if tokens.get(*pos) == Some(&Token::Colon) {
                    *pos += 1;
                }
                let value = match tokens.get(*pos) {
                    Some(Token::Open) => {
                        *pos += 1;
                        Value::Message(parse_message(tokens, pos, true)?)
                    }
                    Some(Token::Word(s)) => {
                        *pos += 1;
                        Value::Scalar(s.clone())
                    }
                    Some(Token::Text(s)) => {
                        *pos += 1;
                        // Adjacent strings are one, as in protobuf's text format (a PEM is often
                        // written a line to a string).
                        let mut s = s.clone();
                        while let Some(Token::Text(more)) = tokens.get(*pos) {
                            s.push_str(more);
                            *pos += 1;
                        }
                        Value::Scalar(s)
                    }
                    _ => return error(format!("field '{name}' has no value")),
                };
                fields.push((name.clone(), value));
            }
            Some(other) => return error(format!("unexpected {other:?}")),
        }
    }
}

/// A bool as protobuf's text format writes one.
pub(crate) fn boolean(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "t" | "1" => Some(true),
        "false" | "False" | "f" | "0" => Some(false),
        _ => None,
    }
}

/// The scalar of a wrapper message (`google.protobuf.Int64Value` and its kin): `{ value: N }`.
pub(crate) fn wrapped(value: &Value) -> Option<&str> {
    match value {
        Value::Message(fields) => match fields.as_slice() {
            [(field, Value::Scalar(v))] if field == "value" => Some(v),
            _ => None,
        },
        Value::Scalar(_) => None,
    }
}

/// The fields of a text-format message, in order.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, Value)>, String> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    parse_message(&tokens, &mut pos, false)
}
