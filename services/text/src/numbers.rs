//! Numbers written as words ("forty five thousand", "the tenth", "two point one") read
//! into values, so that they compare equal to their digit forms.

/// A number found in text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Number {
    pub value: f64,
    /// "tenth", "10th": a position or a day of the month rather than an amount.
    pub ordinal: bool,
}

impl Eq for Number {}

impl Number {
    /// The canonical digit string: `45000`, `2.1`.
    pub fn digits(&self) -> String {
        if self.value.fract() == 0.0 && self.value.abs() < 1e15 {
            format!("{}", self.value as i64)
        } else {
            let s = format!("{:.6}", self.value);
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Class {
    Unit(u64),
    Teen(u64),
    Tens(u64),
    Hundred,
    Scale(u64),
}

const UNITS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
const TEENS: [&str; 10] = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"];
const TENS: [&str; 8] = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
const ORDINAL_UNITS: [&str; 10] = ["", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"];
const ORDINAL_TEENS: [&str; 10] =
    ["tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth"];
const ORDINAL_TENS: [&str; 8] = ["twentieth", "thirtieth", "fortieth", "fiftieth", "sixtieth", "seventieth", "eightieth", "ninetieth"];

/// The class of a number word and whether it is an ordinal.
fn class(word: &str) -> Option<(Class, bool)> {
    let find = |list: &[&str]| list.iter().position(|w| *w == word).map(|i| i as u64);
    if let Some(i) = find(&UNITS) {
        return Some((Class::Unit(i), false));
    }
    if let Some(i) = find(&TEENS) {
        return Some((Class::Teen(10 + i), false));
    }
    if let Some(i) = find(&TENS) {
        return Some((Class::Tens(20 + 10 * i), false));
    }
    if let Some(i) = find(&ORDINAL_UNITS).filter(|i| *i > 0) {
        return Some((Class::Unit(i), true));
    }
    if let Some(i) = find(&ORDINAL_TEENS) {
        return Some((Class::Teen(10 + i), true));
    }
    if let Some(i) = find(&ORDINAL_TENS) {
        return Some((Class::Tens(20 + 10 * i), true));
    }
    match word {
        "hundred" | "hundredth" => Some((Class::Hundred, word.ends_with("th"))),
        "thousand" | "thousandth" => Some((Class::Scale(1_000), word.ends_with("th"))),
        "million" | "millionth" => Some((Class::Scale(1_000_000), word.ends_with("th"))),
        "billion" => Some((Class::Scale(1_000_000_000), false)),
        _ => None,
    }
}

/// The value of a token written in digits: `45000`, `2.5`, `10th`, `1st`.
pub fn number_value(token: &str) -> Option<Number> {
    let t = token.replace(',', "");
    let (digits, ordinal) =
        match t.strip_suffix("st").or_else(|| t.strip_suffix("nd")).or_else(|| t.strip_suffix("rd")).or_else(|| t.strip_suffix("th")) {
            Some(d) if !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()) => (d.to_string(), true),
            _ => (t, false),
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') || !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    digits.parse::<f64>().ok().map(|value| Number { value, ordinal })
}

/// Reads the number that starts `words` (lower case), if any: its value and how many
/// words it used. Adjacent number words that cannot form one number ("seven thirty") end
/// it, so they are read as two numbers.
pub fn parse_number(words: &[String]) -> Option<(Number, usize)> {
    if let Some(n) = number_value(&words[0]) {
        // "2 thousand", "45 million"
        if let Some((Class::Scale(s), _)) = words.get(1).and_then(|w| class(w)) {
            if !n.ordinal {
                return Some((Number { value: n.value * s as f64, ordinal: false }, 2));
            }
        }
        return Some((n, 1));
    }
    let (mut total, mut current) = (0u64, 0u64);
    let mut last: Option<Class> = None;
    let mut used = 0;
    let mut ordinal = false;
    while used < words.len() {
        let word = words[used].as_str();
        if word == "and" && matches!(last, Some(Class::Hundred | Class::Scale(_))) && words.get(used + 1).and_then(|w| class(w)).is_some() {
            used += 1;
            continue;
        }
        let Some((c, is_ordinal)) = class(word) else { break };
        // Which word may follow which inside one number.
        let fits = matches!(
            (c, last),
            (_, None)
                | (Class::Unit(_), Some(Class::Tens(_) | Class::Hundred | Class::Scale(_)))
                | (Class::Teen(_) | Class::Tens(_), Some(Class::Hundred | Class::Scale(_)))
                | (Class::Hundred, Some(Class::Unit(_) | Class::Teen(_) | Class::Tens(_)))
                | (Class::Scale(_), Some(Class::Unit(_) | Class::Teen(_) | Class::Tens(_) | Class::Hundred))
        );
        if !fits {
            break;
        }
        match c {
            Class::Unit(v) | Class::Teen(v) | Class::Tens(v) => current += v,
            Class::Hundred => current = current.max(1) * 100,
            Class::Scale(s) => {
                total += current.max(1) * s;
                current = 0;
            }
        }
        last = Some(c);
        used += 1;
        if is_ordinal {
            ordinal = true;
            break;
        }
    }
    // A lone "zero"/"one" is too often not a quantity ("no one", "one more thing") to be
    // read as one; "hundred" alone neither.
    if used == 0 || (used == 1 && matches!(words[0].as_str(), "one" | "zero" | "hundred")) {
        return None;
    }
    let mut value = (total + current) as f64;
    // "two point five"
    if !ordinal && words.get(used).is_some_and(|w| w == "point") {
        let mut decimals = String::new();
        let mut j = used + 1;
        while let Some((Class::Unit(d), false)) = words.get(j).and_then(|w| class(w)) {
            decimals.push(char::from(b'0' + d as u8));
            j += 1;
        }
        if !decimals.is_empty() {
            value = format!("{}.{}", value as u64, decimals).parse().unwrap_or(value);
            used = j;
        }
    }
    Some((Number { value, ordinal }, used))
}
