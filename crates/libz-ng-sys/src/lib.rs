//! `libz-ng-sys`'s Rust API on zlib-rs. flate2's zlib-ng backend calls these by their Rust
//! paths; libz-rs-sys has the same functions with one difference of type: its `z_stream`
//! holds the allocator callbacks as `Option<fn>` where zlib-ng's bindings hold a bare `fn`.
//! So this crate declares zlib-ng's `z_stream` and forwards each function with the pointer
//! cast. No C symbol is exported (libz-rs-sys's `export-symbols` is off), so nothing clashes.
#![no_std]
#![allow(non_camel_case_types, non_snake_case, clippy::missing_safety_doc)]

use core::ffi::{c_char, c_int, c_ulong};

pub use libz_rs_sys::{
    alloc_func, free_func, internal_state, uInt, uLong, voidpf, Bytef, Z_BEST_COMPRESSION,
    Z_BEST_SPEED, Z_BLOCK, Z_BUF_ERROR, Z_DATA_ERROR, Z_DEFAULT_COMPRESSION, Z_DEFAULT_STRATEGY,
    Z_DEFLATED, Z_ERRNO, Z_FILTERED, Z_FINISH, Z_FIXED, Z_FULL_FLUSH, Z_HUFFMAN_ONLY, Z_MEM_ERROR,
    Z_NEED_DICT, Z_NO_COMPRESSION, Z_NO_FLUSH, Z_OK, Z_PARTIAL_FLUSH, Z_RLE, Z_STREAM_END,
    Z_STREAM_ERROR, Z_SYNC_FLUSH, Z_TREES, Z_VERSION_ERROR,
};

/// zlib-rs's widths (zlib's own), which flate2 reads through `as` casts.
pub type z_size = c_ulong;
pub type z_checksum = c_ulong;

/// zlib-ng's stream: field for field libz-rs-sys's `z_stream`, whose `Option<fn>` callbacks
/// have the layout of a bare `fn` (the null-pointer optimisation is guaranteed for `Option`
/// of a function pointer), so a pointer to one is a valid pointer to the other.
#[repr(C)]
pub struct z_stream {
    pub next_in: *mut Bytef,
    pub avail_in: uInt,
    pub total_in: z_size,
    pub next_out: *mut Bytef,
    pub avail_out: uInt,
    pub total_out: z_size,
    pub msg: *mut c_char,
    pub state: *mut internal_state,
    pub zalloc: alloc_func,
    pub zfree: free_func,
    pub opaque: voidpf,
    pub data_type: c_int,
    pub adler: z_checksum,
    pub reserved: uLong,
}

pub type z_streamp = *mut z_stream;

const _: () = assert!(size_of::<z_stream>() == size_of::<libz_rs_sys::z_stream>());

fn rs(strm: z_streamp) -> *mut libz_rs_sys::z_stream {
    strm.cast()
}

pub unsafe extern "C" fn deflate(strm: z_streamp, flush: c_int) -> c_int {
    unsafe { libz_rs_sys::deflate(rs(strm), flush) }
}

pub unsafe extern "C" fn deflateEnd(strm: z_streamp) -> c_int {
    unsafe { libz_rs_sys::deflateEnd(rs(strm)) }
}

pub unsafe extern "C" fn deflateReset(strm: z_streamp) -> c_int {
    unsafe { libz_rs_sys::deflateReset(rs(strm)) }
}

pub unsafe extern "C" fn deflateParams(strm: z_streamp, level: c_int, strategy: c_int) -> c_int {
    unsafe { libz_rs_sys::deflateParams(rs(strm), level, strategy) }
}

pub unsafe extern "C" fn deflateSetDictionary(
    strm: z_streamp,
    dictionary: *const Bytef,
    length: uInt,
) -> c_int {
    unsafe { libz_rs_sys::deflateSetDictionary(rs(strm), dictionary, length) }
}

pub unsafe extern "C" fn deflateInit2_(
    strm: z_streamp,
    level: c_int,
    method: c_int,
    window_bits: c_int,
    mem_level: c_int,
    strategy: c_int,
    version: *const c_char,
    stream_size: c_int,
) -> c_int {
    unsafe {
        libz_rs_sys::deflateInit2_(
            rs(strm),
            level,
            method,
            window_bits,
            mem_level,
            strategy,
            version,
            stream_size,
        )
    }
}

pub unsafe extern "C" fn inflate(strm: z_streamp, flush: c_int) -> c_int {
    unsafe { libz_rs_sys::inflate(rs(strm), flush) }
}

pub unsafe extern "C" fn inflateEnd(strm: z_streamp) -> c_int {
    unsafe { libz_rs_sys::inflateEnd(rs(strm)) }
}

pub unsafe extern "C" fn inflateReset(strm: z_streamp) -> c_int {
    unsafe { libz_rs_sys::inflateReset(rs(strm)) }
}

pub unsafe extern "C" fn inflateReset2(strm: z_streamp, window_bits: c_int) -> c_int {
    unsafe { libz_rs_sys::inflateReset2(rs(strm), window_bits) }
}

pub unsafe extern "C" fn inflateSetDictionary(
    strm: z_streamp,
    dictionary: *const Bytef,
    length: uInt,
) -> c_int {
    unsafe { libz_rs_sys::inflateSetDictionary(rs(strm), dictionary, length) }
}

pub unsafe extern "C" fn inflateInit2_(
    strm: z_streamp,
    window_bits: c_int,
    version: *const c_char,
    stream_size: c_int,
) -> c_int {
    unsafe { libz_rs_sys::inflateInit2_(rs(strm), window_bits, version, stream_size) }
}

pub extern "C" fn zlibVersion() -> *const c_char {
    libz_rs_sys::zlibVersion()
}
