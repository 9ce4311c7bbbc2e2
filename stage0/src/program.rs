//! The first stage of an airlock installer: a tiny static program in front of the real stub.
//!
//! Why: a truncated copy of an installer used to crash (SIGSEGV) whenever the cut fell inside
//! the stub's loaded segments, before any of our code ran. This program's loaded segments
//! fit in the file's first page, so any cut after that runs it. It opens its own file (the
//! kernel's `AT_EXECFN`, else `argv[0]` and `PATH`; no `/proc`), compares the length with the
//! one the builder recorded in its `AIRLOCK` note (payload-format/SPEC.md, "First stage"),
//! and either prints the stub's truncation message (exit 3) or runs the real stub from the
//! file's bytes: `memfd_create`, `sendfile`, `execveat(AT_EMPTY_PATH)` with
//! `AIRLOCK_INSTALLER=<this file>` added, so the stub reads the installer, not the memfd.
//!
//! Built by `build.rs` with rustc directly (`no_std`, `no_main`, `panic=abort`, raw syscalls,
//! no libc), for x86_64 Linux only. Every `unsafe` is a raw system call or a read of the
//! process's initial stack, which the kernel lays out as the x86_64 SysV ABI describes.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::panic::PanicInfo;

// The record the builder and the writer patch (SPEC.md, "First stage"): an ELF note of owner
// "AIRLOCK", type 1, whose 32-byte descriptor holds u32 version (1), u32 flags (0), u64
// stub_offset, u64 stub_len, u64 file_len. Defined in assembly so that the compiler cannot
// fold the placeholder zeros into the code.
global_asm!(
    ".pushsection .note.airlock,\"a\",@note",
    ".balign 4",
    ".long 8",
    ".long 32",
    ".long 1",
    ".ascii \"AIRLOCK\\0\"",
    "airlock_first_stage_record:",
    ".long 1",
    ".long 0",
    ".quad 0",
    ".quad 0",
    ".quad 0",
    ".popsection",
    ".globl airlock_record_address",
    ".pushsection .text.airlock_record_address,\"ax\",@progbits",
    "airlock_record_address:",
    "lea rax, [rip + airlock_first_stage_record]",
    "ret",
    ".popsection",
);

// The entry point: the kernel starts us with the stack pointer at argc.
global_asm!(
    ".globl _start",
    ".pushsection .text._start,\"ax\",@progbits",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call stage0_main",
    "ud2",
    ".popsection",
);

// The few C string and memory functions the compiler may call, in assembly (a Rust loop could be
// turned back into a call to itself).
global_asm!(
    ".globl memcpy",
    ".pushsection .text.memcpy,\"ax\",@progbits",
    "memcpy:",
    "mov rax, rdi",
    "mov rcx, rdx",
    "rep movsb",
    "ret",
    ".popsection",
    ".globl memset",
    ".pushsection .text.memset,\"ax\",@progbits",
    "memset:",
    "mov r8, rdi",
    "mov eax, esi",
    "mov rcx, rdx",
    "rep stosb",
    "mov rax, r8",
    "ret",
    ".popsection",
    ".globl memmove",
    ".pushsection .text.memmove,\"ax\",@progbits",
    "memmove:",
    "mov rax, rdi",
    "mov rcx, rdx",
    "cmp rdi, rsi",
    "jbe 2f",
    "lea rsi, [rsi + rcx - 1]",
    "lea rdi, [rdi + rcx - 1]",
    "std",
    "rep movsb",
    "cld",
    "ret",
    "2:",
    "rep movsb",
    "ret",
    ".popsection",
    ".globl strlen",
    ".pushsection .text.strlen,\"ax\",@progbits",
    "strlen:",
    "mov rcx, -1",
    "xor eax, eax",
    "repne scasb",
    "not rcx",
    "lea rax, [rcx - 1]",
    "ret",
    ".popsection",
    // core's unwind tables name a personality routine; with panic=abort nothing unwinds,
    // so it is never called.
    ".globl rust_eh_personality",
    ".pushsection .text.rust_eh_personality,\"ax\",@progbits",
    "rust_eh_personality:",
    "ud2",
    ".popsection",
);

#[no_mangle]
extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the compiler calls memcmp only with `n` readable bytes at `a` and `b`.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

#[no_mangle]
extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}

extern "C" {
    fn airlock_record_address() -> *const u8;
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    sys::write_all(2, b"error: internal error in the installer's first stage\n");
    sys::exit(1)
}

/// Exit code of a corrupt or truncated installer (the stub's, DESIGN.md).
const EXIT_CORRUPT: i32 = 3;
/// Exit code of every other failure.
const EXIT_ERROR: i32 = 1;
/// What the stub reads instead of `/proc/self/exe` (stub/src/selfexe.rs).
const INSTALLER_ENV: &[u8] = b"AIRLOCK_INSTALLER=";
const AT_EXECFN: usize = 31;
const PATH_MAX: usize = 4096;

/// The record the builder wrote into the note.
struct Record {
    version: u32,
    stub_offset: u64,
    stub_len: u64,
    file_len: u64,
}

impl Record {
    fn load() -> Record {
        // SAFETY: the symbol names the 32-byte descriptor of our own note, which is mapped
        // read-only with the rest of the program. Volatile reads: the bytes were patched in
        // the file after linking, so they must be read, not assumed.
        let at = unsafe { airlock_record_address() };
        let byte = |i: usize| unsafe { at.add(i).read_volatile() };
        let u64_at = |o: usize| {
            let mut v = 0u64;
            for i in (0..8).rev() {
                v = (v << 8) | u64::from(byte(o + i));
            }
            v
        };
        Record {
            version: u64_at(0) as u32,
            stub_offset: u64_at(8),
            stub_len: u64_at(16),
            file_len: u64_at(24),
        }
    }
}

/// What the kernel put on the initial stack.
struct Start {
    argv: *const *const u8,
    envp: *mut *const u8,
    env_count: usize,
    execfn: *const u8,
}

/// The entry point called by `_start` with the initial stack pointer.
#[no_mangle]
unsafe extern "C" fn stage0_main(sp: *const usize) -> ! {
    // SAFETY: at entry the stack holds argc, argv[argc] and NULL, envp... and NULL, then the
    // auxiliary vector of (type, value) pairs ending with AT_NULL (x86_64 SysV ABI, 3.4.1).
    let start = unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        let envp = argv.add(argc + 1) as *mut *const u8;
        let mut env_count = 0;
        while !(*envp.add(env_count)).is_null() {
            env_count += 1;
        }
        let mut aux = envp.add(env_count + 1) as *const usize;
        let mut execfn = core::ptr::null();
        while *aux != 0 {
            if *aux == AT_EXECFN {
                execfn = *aux.add(1) as *const u8;
            }
            aux = aux.add(2);
        }
        Start {
            argv,
            envp,
            env_count,
            execfn,
        }
    };
    sys::exit(run(start))
}

/// A NUL-terminated C string on the initial stack, as a slice without its NUL.
fn c_str<'a>(p: *const u8) -> &'a [u8] {
    if p.is_null() {
        return &[];
    }
    let mut n = 0;
    // SAFETY: `p` points into the argument, environment or execfn strings the kernel copied
    // onto the stack, each terminated by NUL; they live as long as the process.
    unsafe {
        while *p.add(n) != 0 {
            n += 1;
        }
        core::slice::from_raw_parts(p, n)
    }
}

/// A fixed buffer holding a NUL-terminated string built from pieces.
struct Buf<const N: usize> {
    bytes: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Buf<N> {
    fn new() -> Self {
        Buf {
            bytes: [0; N],
            len: 0,
            overflow: false,
        }
    }

    fn push(&mut self, s: &[u8]) -> &mut Self {
        // Keep one byte for the NUL.
        if self.len + s.len() >= N {
            self.overflow = true;
            return self;
        }
        self.bytes[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
        self.bytes[self.len] = 0;
        self
    }

    fn num(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..])
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The string with its NUL, for a system call.
    fn as_c(&self) -> *const u8 {
        self.bytes.as_ptr()
    }
}

/// Prints `error: <message>` and returns `code`.
fn fail(message: &Buf<2048>, code: i32) -> i32 {
    let mut line = Buf::<2304>::new();
    line.push(b"error: ").push(message.as_bytes()).push(b"\n");
    sys::write_all(2, line.as_bytes());
    code
}

fn errno_text(m: &mut Buf<2048>, errno: i32) {
    let name: &[u8] = match errno {
        1 => b"EPERM, operation not permitted",
        2 => b"ENOENT, no such file or directory",
        12 => b"ENOMEM, out of memory",
        13 => b"EACCES, permission denied",
        22 => b"EINVAL, invalid argument",
        24 => b"EMFILE, too many open files",
        36 => b"ENAMETOOLONG, file name too long",
        38 => b"ENOSYS, function not implemented",
        _ => b"errno",
    };
    m.push(name).push(b" (").num(errno as u64).push(b")");
}

fn starts_with(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && &s[..prefix.len()] == prefix
}

fn run(start: Start) -> i32 {
    let record = Record::load();
    let mut m = Buf::<2048>::new();
    if record.version != 1 || record.stub_len == 0 {
        m.push(b"this installer's first stage names no program to run (was it written by `airlock build`?)");
        return fail(&m, EXIT_CORRUPT);
    }
    // SAFETY (of the reads below): argv and envp hold `argc` and `env_count` pointers to
    // NUL-terminated strings (see stage0_main).
    let argv0 = c_str(unsafe { *start.argv });
    let env = |i: usize| c_str(unsafe { *start.envp.add(i) });
    let path_var = (0..start.env_count)
        .map(env)
        .find(|e| starts_with(e, b"PATH="))
        .map(|e| &e[5..]);

    let Some((path, fd)) = open_self(c_str(start.execfn), argv0, path_var) else {
        m.push(b"failed to open the installer's own file: neither the kernel's AT_EXECFN (")
            .push(c_str(start.execfn))
            .push(b") nor argv[0] (")
            .push(argv0)
            .push(b") could be opened for reading");
        return fail(&m, EXIT_ERROR);
    };
    let actual = match sys::file_size(fd) {
        Ok(n) => n,
        Err(e) => {
            m.push(b"failed to read the length of ").push(path.as_bytes()).push(b": ");
            errno_text(&mut m, e);
            return fail(&m, EXIT_ERROR);
        }
    };
    let stub_end = record.stub_offset.saturating_add(record.stub_len);
    if actual < record.file_len {
        // A split installer (`edge.run`, `edge.run.002`, ...): the stub joins the parts.
        // `.003` too: with `.002` lost, the stub names the missing part.
        let sibling_exists = |suffix: &[u8]| {
            let mut sibling = Buf::<{ PATH_MAX + 8 }>::new();
            sibling.push(path.as_bytes()).push(suffix);
            !sibling.overflow && sys::exists(sibling.as_c())
        };
        let split = sibling_exists(b".002") || sibling_exists(b".003");
        if !split || actual < stub_end {
            let missing = record.file_len - actual;
            m.push(b"installer is truncated: it is ")
                .num(actual)
                .push(b" bytes but should be ")
                .num(record.file_len)
                .push(b" (")
                .num(missing)
                .push(if missing == 1 { b" byte" } else { b" bytes" })
                .push(b" missing); copy or download it again");
            return fail(&m, EXIT_CORRUPT);
        }
    } else if actual < stub_end {
        m.push(b"installer is truncated: it is ")
            .num(actual)
            .push(b" bytes, but its program part alone is ")
            .num(stub_end)
            .push(b" bytes; copy or download it again");
        return fail(&m, EXIT_CORRUPT);
    }

    let memfd = match sys::memfd_create(b"airlock-stub\0".as_ptr()) {
        Ok(fd) => fd,
        Err(e) => return refused(&mut m, b"memfd_create", e, &record, path.as_bytes()),
    };
    if let Err(e) = sys::copy_range(fd, memfd, record.stub_offset, record.stub_len) {
        m.push(b"failed to copy the installer's program into memory: ");
        errno_text(&mut m, e);
        return fail(&m, EXIT_ERROR);
    }
    sys::close(fd);

    // The stub operates on the installer, not on the memfd: AIRLOCK_INSTALLER=<absolute path>,
    // unless the caller already set it (the stub's debugging aid keeps its meaning).
    let mut var = Buf::<{ 2 * PATH_MAX + 32 }>::new();
    let already_set = (0..start.env_count).any(|i| starts_with(env(i), INSTALLER_ENV));
    if !already_set {
        var.push(INSTALLER_ENV);
        let mut rel = path.as_bytes();
        if !starts_with(rel, b"/") {
            let mut cwd = [0u8; PATH_MAX];
            if let Ok(n) = sys::getcwd(&mut cwd) {
                var.push(&cwd[..n]);
                if n > 1 {
                    var.push(b"/");
                }
                while starts_with(rel, b"./") {
                    rel = &rel[2..];
                }
            }
        }
        var.push(rel);
        if var.overflow {
            m.push(b"failed to run the installer: its path is too long");
            return fail(&m, EXIT_ERROR);
        }
        // SAFETY: the environment array is followed by its NULL and then the auxiliary
        // vector, which nothing reads any more: the slot after the last variable gets ours,
        // the auxiliary vector's first word becomes the new terminating NULL. `var` lives
        // until execveat, which copies the strings.
        unsafe {
            *start.envp.add(start.env_count) = var.as_c();
            *start.envp.add(start.env_count + 1) = core::ptr::null();
        }
    }
    let e = sys::execveat(memfd, start.argv, start.envp);
    refused(&mut m, b"execveat", e, &record, path.as_bytes())
}

/// Reports that the stub could not be run from memory (`call` failed with `errno`), with the
/// way around it, and returns the exit code.
fn refused(m: &mut Buf<2048>, call: &[u8], errno: i32, record: &Record, path: &[u8]) -> i32 {
    m.push(b"failed to run the installer's program from memory (")
        .push(call)
        .push(b": ");
    errno_text(m, errno);
    m.push(b"): this system may refuse to execute in-memory files (vm.memfd_noexec = 2, an SELinux \
             or AppArmor policy, or a seccomp filter); run the program copied out instead: tail -c +")
        .num(record.stub_offset + 1)
        .push(b" ")
        .push(path)
        .push(b" | head -c ")
        .num(record.stub_len)
        .push(b" > airlock-stub && chmod +x airlock-stub && AIRLOCK_INSTALLER=")
        .push(path)
        .push(b" ./airlock-stub ARGS");
    fail(m, EXIT_ERROR)
}

/// Opens the running installer for reading: the path the kernel was given (`AT_EXECFN`),
/// else `argv[0]` as a path, else `argv[0]` searched in `PATH`. Returns the path and the fd.
fn open_self(
    execfn: &[u8],
    argv0: &[u8],
    path_var: Option<&[u8]>,
) -> Option<(Buf<PATH_MAX>, i32)> {
    let try_open = |pieces: &[&[u8]]| {
        let mut p = Buf::<PATH_MAX>::new();
        for piece in pieces {
            p.push(piece);
        }
        if p.overflow || p.len == 0 {
            return None;
        }
        sys::open_read(p.as_c()).ok().map(|fd| (p, fd))
    };
    if let Some(found) = try_open(&[execfn]) {
        return Some(found);
    }
    if argv0.contains(&b'/') {
        return try_open(&[argv0]);
    }
    for dir in path_var?.split(|&b| b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        if let Some(found) = try_open(&[dir, b"/", argv0]) {
            return Some(found);
        }
    }
    None
}

/// Raw Linux system calls (x86_64). Errors are positive errno values.
mod sys {
    use super::asm;

    const SYS_WRITE: usize = 1;
    const SYS_CLOSE: usize = 3;
    const SYS_FSTAT: usize = 5;
    const SYS_PREAD64: usize = 17;
    const SYS_SENDFILE: usize = 40;
    const SYS_GETCWD: usize = 79;
    const SYS_EXIT_GROUP: usize = 231;
    const SYS_OPENAT: usize = 257;
    const SYS_NEWFSTATAT: usize = 262;
    const SYS_MEMFD_CREATE: usize = 319;
    const SYS_EXECVEAT: usize = 322;
    const AT_FDCWD: isize = -100;
    const AT_EMPTY_PATH: usize = 0x1000;
    const O_RDONLY_CLOEXEC: usize = 0o2000000;
    const MFD_CLOEXEC: usize = 1;
    const MFD_EXEC: usize = 0x10;
    const EINTR: i32 = 4;
    const EINVAL: i32 = 22;
    const ENOSYS: i32 = 38;

    /// `struct stat` on x86_64 is 144 bytes; `st_size` is the i64 at offset 48.
    const STAT_LEN: usize = 144;
    const ST_SIZE: usize = 48;

    fn syscall6(n: usize, a: [usize; 6]) -> Result<usize, i32> {
        let ret: isize;
        // SAFETY: a raw system call; every caller passes arguments valid for its number
        // (pointers to live buffers of the sizes given).
        unsafe {
            asm!("syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
                in("r10") a[3], in("r8") a[4], in("r9") a[5],
                lateout("rcx") _, lateout("r11") _,
                options(nostack));
        }
        if (-4095..0).contains(&ret) {
            Err(-ret as i32)
        } else {
            Ok(ret as usize)
        }
    }

    fn call(n: usize, a0: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> Result<usize, i32> {
        loop {
            match syscall6(n, [a0, a1, a2, a3, a4, 0]) {
                Err(EINTR) => continue,
                other => return other,
            }
        }
    }

    pub fn write_all(fd: i32, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match call(SYS_WRITE, fd as usize, bytes.as_ptr() as usize, bytes.len(), 0, 0) {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes = &bytes[n..],
            }
        }
    }

    pub fn exit(code: i32) -> ! {
        let _ = syscall6(SYS_EXIT_GROUP, [code as usize, 0, 0, 0, 0, 0]);
        loop {
            core::hint::spin_loop();
        }
    }

    /// `path` is NUL-terminated.
    pub fn open_read(path: *const u8) -> Result<i32, i32> {
        call(SYS_OPENAT, AT_FDCWD as usize, path as usize, O_RDONLY_CLOEXEC, 0, 0).map(|fd| fd as i32)
    }

    pub fn close(fd: i32) {
        let _ = call(SYS_CLOSE, fd as usize, 0, 0, 0, 0);
    }

    pub fn file_size(fd: i32) -> Result<u64, i32> {
        let mut st = [0u64; STAT_LEN / 8];
        call(SYS_FSTAT, fd as usize, st.as_mut_ptr() as usize, 0, 0, 0)?;
        Ok(st[ST_SIZE / 8])
    }

    /// True when something exists at `path` (NUL-terminated).
    pub fn exists(path: *const u8) -> bool {
        let mut st = [0u64; STAT_LEN / 8];
        call(SYS_NEWFSTATAT, AT_FDCWD as usize, path as usize, st.as_mut_ptr() as usize, 0, 0).is_ok()
    }

    /// The working directory, without a NUL; its length.
    pub fn getcwd(buf: &mut [u8]) -> Result<usize, i32> {
        let n = call(SYS_GETCWD, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0)?;
        // The kernel returns the length including the NUL; "(unreachable)" paths start
        // without a slash and are useless here.
        if n == 0 || buf[0] != b'/' {
            return Err(ENOSYS);
        }
        Ok(n - 1)
    }

    /// An executable in-memory file, closed on exec. Asks for `MFD_EXEC` (kernels from 6.3
    /// with `vm.memfd_noexec` otherwise seal new memfds non-executable) and retries without
    /// it on kernels that do not know the flag.
    pub fn memfd_create(name: *const u8) -> Result<i32, i32> {
        match call(SYS_MEMFD_CREATE, name as usize, MFD_CLOEXEC | MFD_EXEC, 0, 0, 0) {
            Err(EINVAL) => call(SYS_MEMFD_CREATE, name as usize, MFD_CLOEXEC, 0, 0, 0),
            other => other,
        }
        .map(|fd| fd as i32)
    }

    /// Copies `len` bytes at `offset` of `from` to the current position of `to`: sendfile,
    /// else pread and write through a buffer.
    pub fn copy_range(from: i32, to: i32, offset: u64, len: u64) -> Result<(), i32> {
        let mut off = offset as i64;
        let end = offset + len;
        while (off as u64) < end {
            let want = (end - off as u64).min(1 << 30) as usize;
            match call(SYS_SENDFILE, to as usize, from as usize, &mut off as *mut i64 as usize, want, 0) {
                Ok(0) => return Err(EINVAL),
                Ok(_) => {}
                Err(EINVAL) | Err(ENOSYS) => return copy_by_reading(from, to, off as u64, end),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn copy_by_reading(from: i32, to: i32, mut off: u64, end: u64) -> Result<(), i32> {
        let mut buf = [0u8; 16384];
        while off < end {
            let want = ((end - off) as usize).min(buf.len());
            let n = call(SYS_PREAD64, from as usize, buf.as_mut_ptr() as usize, want, off as usize, 0)?;
            if n == 0 {
                return Err(EINVAL);
            }
            let mut done = 0;
            while done < n {
                done += call(SYS_WRITE, to as usize, buf[done..].as_ptr() as usize, n - done, 0, 0)?;
            }
            off += n as u64;
        }
        Ok(())
    }

    /// Runs the program in `fd` with `argv` and `envp`; returns only on failure (the errno).
    pub fn execveat(fd: i32, argv: *const *const u8, envp: *const *const u8) -> i32 {
        let empty = b"\0";
        match call(SYS_EXECVEAT, fd as usize, empty.as_ptr() as usize, argv as usize, envp as usize, AT_EMPTY_PATH) {
            Err(e) => e,
            Ok(_) => 0,
        }
    }
}
