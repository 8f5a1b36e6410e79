//! Codes that cross module boundaries are typed enums, each declared with one table of names by
//! `codes!`: the enum, `ALL`, `as_str()` (every output — text, JSON, Prometheus label, HTML —
//! asks it for its name), `FromStr` (the one parser) and serde, which goes through the same
//! names. Nothing downstream matches on a string or formats a `Debug` value as a label.

/// A code name that is not in its table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{value}'")]
pub struct UnknownCode {
    pub what: &'static str,
    pub value: String,
}

/// `codes! { /// doc  pub enum Name { Variant = "name", … } }`
#[macro_export]
macro_rules! codes {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vm])* $v,)+
        }

        impl $name {
            /// Every code, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The stable name used in every output.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::codes::UnknownCode;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == s)
                    .ok_or_else(|| $crate::codes::UnknownCode { what: stringify!($name), value: s.to_string() })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    codes! {
        /// A test code.
        pub enum Sample {
            One = "one",
            TwoWords = "two_words",
        }
    }

    #[test]
    fn names_round_trip_through_the_parser_and_serde() {
        for c in Sample::ALL {
            assert_eq!(c.as_str().parse::<Sample>(), Ok(*c));
            let json = serde_json::to_string(c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), *c);
        }
        let e = "three".parse::<Sample>().unwrap_err();
        assert_eq!(e.to_string(), "unknown Sample 'three'");
    }
}
