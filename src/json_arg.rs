//! jsonb arguments read with errors a caller can act on. pgrx's `JsonB` parses its argument with
//! serde_json and panics (XX000) on what jsonb holds but serde_json cannot represent: a number
//! beyond the range of a double (`1e400`), or nesting past serde_json's recursion limit (128).
//! [`JsonText`] takes the argument as jsonb's own text, and [`parse`] reads it naming the argument:
//! 22023 for a number out of range, 54001 (statement_too_complex, PostgreSQL's own code for input
//! nested too deeply) for the nesting.
use crate::errors::{raise, Kind};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::datum::{Datum, UnboxDatum};
use pgrx::prelude::*;
use serde_json::Value;
use std::ffi::CStr;

/// A jsonb argument as jsonb_out writes it, not parsed yet.
pub struct JsonText(String);

impl_sql_translatable!(JsonText, arg_only = "jsonb");

impl FromDatum for JsonText {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<JsonText> {
        if is_null {
            return None;
        }
        // SAFETY: a non-null jsonb datum (the SQL signature says jsonb); jsonb_out detoasts it
        // and returns a palloc'd C string, freed once copied.
        unsafe {
            let out = pgrx::direct_function_call::<&CStr>(pg_sys::jsonb_out, &[Some(datum)])?;
            let text = out.to_string_lossy().into_owned();
            pg_sys::pfree(out.as_ptr().cast_mut().cast());
            Some(JsonText(text))
        }
    }
}

unsafe impl UnboxDatum for JsonText {
    type As<'src> = JsonText;
    unsafe fn unbox<'src>(d: Datum<'src>) -> Self::As<'src>
    where
        Self: 'src,
    {
        // SAFETY: pgrx unboxes only the non-null elements of a jsonb[] argument (NULL ones are
        // None before this is called), and each is a valid jsonb datum for the call's duration.
        unsafe { JsonText::from_datum(d.sans_lifetime(), false) }.unwrap_or(JsonText(String::new()))
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for JsonText {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the argument is declared jsonb (impl_sql_translatable above), so a non-null
        // datum is a valid jsonb for the call's duration; from_datum copies it out as text.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| {
            raise(
                Kind::NullArgument,
                format!("argument {} must not be NULL", index + 1),
                None,
                None,
            )
        })
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> pgrx::nullable::Nullable<Self> {
        // SAFETY: as above; a NULL argument becomes Nullable::Null without reading the datum.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

impl JsonText {
    /// The value, or ERROR naming `name` (`p_subscription`, `p_features[3]`).
    pub fn parse(&self, name: &str) -> Value {
        parse(&self.0, name)
    }
}

/// Reads jsonb's text. jsonb itself is valid JSON, so the only failures are serde_json's limits.
pub fn parse(text: &str, name: &str) -> Value {
    match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => raise(
            Kind::TooDeep,
            format!("{name} is nested too deeply"),
            Some(format!("{name}: at most 128 levels of arrays and objects")),
            Some("Flatten the value; metadata needs no deep nesting."),
        ),
        Err(e) => raise(
            Kind::InvalidParameter,
            format!("{name} holds a value checkout cannot read"),
            Some(format!("{name}: {e}")),
            Some("Numbers must be within the range of a double precision float (about 1e308)."),
        ),
    }
}

#[cfg(test)]
mod unit_tests {
    /// [`super::parse`] tells the two limits apart by serde_json's message: a new serde_json that
    /// words them otherwise must fail here, not turn 54001 into 22023 unnoticed.
    #[test]
    fn serde_json_words_its_limits_as_parse_expects() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let err = serde_json::from_str::<serde_json::Value>(&deep).unwrap_err();
        assert!(
            err.to_string().starts_with("recursion limit exceeded"),
            "{err}"
        );
        let big = serde_json::from_str::<serde_json::Value>("[1e400]").unwrap_err();
        assert!(
            !big.to_string().starts_with("recursion limit exceeded"),
            "{big}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(&deep[100..deep.len() - 100]).is_ok());
    }
}
