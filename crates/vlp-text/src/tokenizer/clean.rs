//! Text cleaning as open_clip does it before tokenising: `ftfy.fix_text`, HTML unescaping twice,
//! whitespace collapsing and lowercasing.
//!
//! ftfy's encoding repair (mojibake detection) is not reproduced: it needs ftfy's statistical
//! "badness" heuristics, and CLIP captions rarely need it. Every other default ftfy fix that can
//! change a token is: HTML entities (when the text has no `<`), terminal escapes, Latin
//! ligatures, full-/half-width forms, curly quotes, line breaks, control characters and NFC.

use unicode_normalization::UnicodeNormalization;

/// open_clip's `_clean_lower`: `whitespace_clean(basic_clean(text)).lower()`.
pub fn clean_lower(text: &str) -> String {
    let t = fix_text(text);
    let t = html_unescape(&html_unescape(&t));
    whitespace_clean(t.trim_matches(is_py_space)).to_lowercase()
}

/// Python's `str.isspace()`: Unicode White_Space plus the information separators U+001C–U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `" ".join(text.split())`.
pub fn whitespace_clean(text: &str) -> String {
    text.split(is_py_space)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The parts of `ftfy.fix_text` (default configuration) described in the module docs.
pub fn fix_text(text: &str) -> String {
    let mut t = if text.contains('<') {
        text.to_string()
    } else {
        html_unescape(text)
    };
    t = remove_terminal_escapes(&t);
    let mut out = String::with_capacity(t.len());
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // Latin ligatures and legacy digraphs.
            'Ĳ' => out.push_str("IJ"),
            'ĳ' => out.push_str("ij"),
            'ŉ' => out.push_str("ʼn"),
            'Ǳ' => out.push_str("DZ"),
            'ǲ' => out.push_str("Dz"),
            'ǳ' => out.push_str("dz"),
            'Ǆ' => out.push_str("DŽ"),
            'ǅ' => out.push_str("Dž"),
            'ǆ' => out.push_str("dž"),
            'Ǉ' => out.push_str("LJ"),
            'ǈ' => out.push_str("Lj"),
            'ǉ' => out.push_str("lj"),
            'Ǌ' => out.push_str("NJ"),
            'ǋ' => out.push_str("Nj"),
            'ǌ' => out.push_str("nj"),
            'ﬀ' => out.push_str("ff"),
            'ﬁ' => out.push_str("fi"),
            'ﬂ' => out.push_str("fl"),
            'ﬃ' => out.push_str("ffi"),
            'ﬄ' => out.push_str("ffl"),
            'ﬅ' => out.push_str("ſt"),
            'ﬆ' => out.push_str("st"),
            // Full- and half-width forms → standard width (ftfy's WIDTH_MAP is NFKC on this block).
            '\u{3000}' => out.push(' '),
            '\u{ff01}'..='\u{ffef}' => out.extend(c.to_string().nfkc()),
            // Curly quotes.
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => out.push('\''),
            '\u{201c}'..='\u{201f}' => out.push('"'),
            // Line breaks → \n.
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\u{2028}' | '\u{2029}' | '\u{85}' => out.push('\n'),
            // Control characters ftfy removes.
            '\u{0}'..='\u{8}'
            | '\u{b}'
            | '\u{e}'..='\u{1f}'
            | '\u{7f}'
            | '\u{206a}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffc}' => {}
            _ => out.push(c),
        }
    }
    out.nfc().collect()
}

/// Removes ANSI terminal escape sequences (`ESC [ ... letter`).
fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Named entities understood by [`html_unescape`]: HTML's Latin-1 set plus common typography.
#[rustfmt::skip]
const ENTITIES: &[(&str, &str)] = &[
    ("amp", "&"), ("lt", "<"), ("gt", ">"), ("quot", "\""), ("apos", "'"), ("nbsp", "\u{a0}"),
    ("iexcl", "¡"), ("cent", "¢"), ("pound", "£"), ("curren", "¤"), ("yen", "¥"), ("brvbar", "¦"),
    ("sect", "§"), ("uml", "¨"), ("copy", "©"), ("ordf", "ª"), ("laquo", "«"), ("not", "¬"),
    ("shy", "\u{ad}"), ("reg", "®"), ("macr", "¯"), ("deg", "°"), ("plusmn", "±"), ("sup2", "²"),
    ("sup3", "³"), ("acute", "´"), ("micro", "µ"), ("para", "¶"), ("middot", "·"), ("cedil", "¸"),
    ("sup1", "¹"), ("ordm", "º"), ("raquo", "»"), ("frac14", "¼"), ("frac12", "½"), ("frac34", "¾"),
    ("iquest", "¿"), ("Agrave", "À"), ("Aacute", "Á"), ("Acirc", "Â"), ("Atilde", "Ã"), ("Auml", "Ä"),
    ("Aring", "Å"), ("AElig", "Æ"), ("Ccedil", "Ç"), ("Egrave", "È"), ("Eacute", "É"), ("Ecirc", "Ê"),
    ("Euml", "Ë"), ("Igrave", "Ì"), ("Iacute", "Í"), ("Icirc", "Î"), ("Iuml", "Ï"), ("ETH", "Ð"),
    ("Ntilde", "Ñ"), ("Ograve", "Ò"), ("Oacute", "Ó"), ("Ocirc", "Ô"), ("Otilde", "Õ"), ("Ouml", "Ö"),
    ("times", "×"), ("Oslash", "Ø"), ("Ugrave", "Ù"), ("Uacute", "Ú"), ("Ucirc", "Û"), ("Uuml", "Ü"),
    ("Yacute", "Ý"), ("THORN", "Þ"), ("szlig", "ß"), ("agrave", "à"), ("aacute", "á"), ("acirc", "â"),
    ("atilde", "ã"), ("auml", "ä"), ("aring", "å"), ("aelig", "æ"), ("ccedil", "ç"), ("egrave", "è"),
    ("eacute", "é"), ("ecirc", "ê"), ("euml", "ë"), ("igrave", "ì"), ("iacute", "í"), ("icirc", "î"),
    ("iuml", "ï"), ("eth", "ð"), ("ntilde", "ñ"), ("ograve", "ò"), ("oacute", "ó"), ("ocirc", "ô"),
    ("otilde", "õ"), ("ouml", "ö"), ("divide", "÷"), ("oslash", "ø"), ("ugrave", "ù"), ("uacute", "ú"),
    ("ucirc", "û"), ("uuml", "ü"), ("yacute", "ý"), ("thorn", "þ"), ("yuml", "ÿ"), ("ndash", "–"),
    ("mdash", "—"), ("lsquo", "‘"), ("rsquo", "’"), ("sbquo", "‚"), ("ldquo", "“"), ("rdquo", "”"),
    ("bdquo", "„"), ("hellip", "…"), ("bull", "•"), ("prime", "′"), ("trade", "™"), ("euro", "€"),
    ("larr", "←"), ("rarr", "→"), ("uarr", "↑"), ("darr", "↓"), ("harr", "↔"), ("minus", "−"),
    ("le", "≤"), ("ge", "≥"), ("ne", "≠"), ("infin", "∞"), ("dagger", "†"), ("permil", "‰"),
    ("ensp", "\u{2002}"), ("emsp", "\u{2003}"), ("thinsp", "\u{2009}"), ("zwnj", "\u{200c}"), ("zwj", "\u{200d}"),
];

/// The 106 HTML 5 names Python's `html.unescape` also accepts without the closing `;`.
#[rustfmt::skip]
const LEGACY: &[&str] = &[
    "Aacute", "aacute", "Acirc", "acirc", "acute", "AElig", "aelig", "Agrave", "agrave", "AMP",
    "amp", "Aring", "aring", "Atilde", "atilde", "Auml", "auml", "brvbar", "Ccedil", "ccedil",
    "cedil", "cent", "COPY", "copy", "curren", "deg", "divide", "Eacute", "eacute", "Ecirc",
    "ecirc", "Egrave", "egrave", "ETH", "eth", "Euml", "euml", "frac12", "frac14", "frac34", "GT",
    "gt", "Iacute", "iacute", "Icirc", "icirc", "iexcl", "Igrave", "igrave", "iquest", "Iuml",
    "iuml", "laquo", "LT", "lt", "macr", "micro", "middot", "nbsp", "not", "Ntilde", "ntilde",
    "Oacute", "oacute", "Ocirc", "ocirc", "Ograve", "ograve", "ordf", "ordm", "Oslash", "oslash",
    "Otilde", "otilde", "Ouml", "ouml", "para", "plusmn", "pound", "QUOT", "quot", "raquo", "REG",
    "reg", "sect", "shy", "sup1", "sup2", "sup3", "szlig", "THORN", "thorn", "times", "Uacute",
    "uacute", "Ucirc", "ucirc", "Ugrave", "ugrave", "uml", "Uuml", "uuml", "Yacute", "yacute",
    "yen", "yuml",
];

/// Value of a named entity; the upper-case legacy spellings (`AMP`, `COPY`, ...) alias the lower.
fn entity(name: &str) -> Option<&'static str> {
    let upper_alias = matches!(name, "AMP" | "COPY" | "GT" | "LT" | "QUOT" | "REG");
    ENTITIES
        .iter()
        .find(|(n, _)| *n == name || (upper_alias && n.eq_ignore_ascii_case(name)))
        .map(|(_, v)| *v)
}

/// Python's `html.unescape` for numeric references and the entities in [`ENTITIES`].
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let (replacement, consumed) = entity_at(rest);
        match replacement {
            Some(r) => {
                out.push_str(&r);
                rest = &rest[consumed..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the reference at the start of `s` (which begins with `&`): (text, bytes consumed).
fn entity_at(s: &str) -> (Option<String>, usize) {
    let body = &s[1..];
    if let Some(num) = body.strip_prefix('#') {
        let (hex, digits) = match num.strip_prefix(['x', 'X']) {
            Some(h) => (true, h),
            None => (false, num),
        };
        let len = digits
            .chars()
            .take_while(|c| {
                if hex {
                    c.is_ascii_hexdigit()
                } else {
                    c.is_ascii_digit()
                }
            })
            .count();
        if len == 0 {
            return (None, 0);
        }
        let value =
            u32::from_str_radix(&digits[..len], if hex { 16 } else { 10 }).unwrap_or(0x110000);
        let mut consumed = 1 + 1 + usize::from(hex) + len;
        if digits[len..].starts_with(';') {
            consumed += 1;
        }
        // Python maps invalid and surrogate code points to U+FFFD and C1 controls via cp1252;
        // the common case is the plain code point.
        let c = char::from_u32(value)
            .filter(|_| value != 0)
            .unwrap_or('\u{fffd}');
        return (Some(c.to_string()), consumed);
    }
    let name_len = body
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    let name = &body[..name_len];
    if body[name_len..].starts_with(';')
        && let Some(v) = entity(name)
    {
        return (Some(v.to_string()), 1 + name_len + 1);
    }
    // Otherwise the longest legacy name prefixing the text, as Python does.
    match LEGACY
        .iter()
        .filter(|l| name.starts_with(**l))
        .max_by_key(|l| l.len())
    {
        Some(l) => (entity(l).map(str::to_string), 1 + l.len()),
        None => (None, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_open_clip() {
        assert_eq!(
            clean_lower("  Two  PEOPLE\triding\n bikes "),
            "two people riding bikes"
        );
        assert_eq!(
            clean_lower("fish &amp;amp; chips &lt;3 &#39;x&#x27; caf&eacute;"),
            "fish & chips <3 'x' café"
        );
        assert_eq!(
            clean_lower("“curly” ‘quotes’ and ﬁne ｆｕｌｌｗｉｄｔｈ"),
            "\"curly\" 'quotes' and fine fullwidth"
        );
        assert_eq!(clean_lower("a\u{0}b\u{1c}c\u{feff}d"), "abcd");
        assert_eq!(clean_lower("\u{1b}[31mred\u{1b}[0m text"), "red text");
        // Decomposed é (e + U+0301) becomes the precomposed form.
        assert_eq!(clean_lower("cafe\u{301}"), "caf\u{e9}");
        // Python 3.11: html.unescape('AT&T &amp &notanentity; &#128049; &copyright &eacutex &#0; &#x110000;')
        assert_eq!(
            html_unescape("AT&T &amp &notanentity; &#128049; &copyright &eacutex &#0; &#x110000;"),
            "AT&T & ¬anentity; 🐱 ©right éx \u{fffd} \u{fffd}"
        );
    }
}
