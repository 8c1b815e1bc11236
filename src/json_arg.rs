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
        // SAFETY: array elements handed to unbox are non-null jsonb datums.
        unsafe { JsonText::from_datum(d.sans_lifetime(), false) }.unwrap_or(JsonText(String::new()))
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for JsonText {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: as for pgrx's own jsonb arguments.
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
        // SAFETY: as above; NULL becomes Nullable::Null.
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
