/**
 * @module
 * nbdsh (libnbd's Python shell) scripts that drive option negotiation and every command,
 * including requests libnbd would refuse to send in strict mode (unaligned, out of range, writes
 * on a read-only export), checking the errno the server answers.
 */

import assert from "node:assert/strict";
import { StoreError } from "../../src/store/store.ts";
import { DeviceError } from "../../src/nbd/errors.ts";
import { describeFailure, runNbdsh } from "../support/clients.ts";
import { withServer } from "./fixture.ts";

const MiB = 1024 * 1024;

/** Runs a script with `uri` defined; it must print OK at the end. */
async function nbdsh(uri: string, body: string): Promise<void> {
  const script = `import errno\nuri = ${JSON.stringify(uri)}\n${body}\nprint("OK")\n`;
  const result = await runNbdsh(script, { timeoutMs: 60_000 });
  if (result.code !== 0 || !result.stdout.includes("OK")) throw new Error(describeFailure(result));
}

/** Python helper, prepended where a script checks that a call fails with a given errno. */
const EXPECT_ERRNO = `
def expect_errno(expected, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except nbd.Error as e:
        got = e.errno if isinstance(e.errno, int) else getattr(errno, str(e.errno), None)
        assert got == expected, f"{fn.__name__}: expected errno {expected}, got {e.errno} ({e.string})"
        return
    raise AssertionError(f"{fn.__name__} succeeded, expected errno {expected}")
`;

Deno.test("negotiate() lists the export, answers INFO, and refuses an unknown export name", async () => {
  await withServer(
    { sizeBytes: 32 * MiB, server: { exportName: "disk", description: "a disk" } },
    async (f) => {
      await nbdsh(
        `nbd+unix:///disk?socket=${f.socketPath}`,
        `
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(uri)
names = []
h.opt_list(lambda name, description: names.append((name, description)))
assert names == [("disk", "a disk")], names
h.set_export_name("disk")
h.set_full_info(True)
h.opt_info()
assert h.get_size() == ${32 * MiB}
assert h.get_canonical_export_name() == "disk"
assert h.get_export_description() == "a disk"
assert h.get_block_size(nbd.SIZE_MINIMUM) == 512
assert h.get_block_size(nbd.SIZE_PREFERRED) == 4096
h.set_export_name("nope")
try:
    h.opt_info()
    raise AssertionError("INFO for an unknown export succeeded")
except nbd.Error as e:
    pass
try:
    h.opt_go()
    raise AssertionError("GO to an unknown export succeeded")
except nbd.Error as e:
    pass
h.set_export_name("")
h.opt_go()
assert h.get_size() == ${32 * MiB}
h.shutdown()
`,
      );
    },
  );
});

Deno.test("negotiate() selects base:allocation only with structured replies", async () => {
  await withServer({}, async (f) => {
    await nbdsh(
      f.uri,
      `
h = nbd.NBD()
h.set_opt_mode(True)
h.add_meta_context("base:allocation")
h.connect_uri(uri)
assert h.get_structured_replies_negotiated()
contexts = []
h.opt_list_meta_context(lambda name: contexts.append(name))
assert contexts == ["base:allocation"], contexts
h.opt_go()
assert h.can_meta_context("base:allocation")
assert h.can_multi_conn() and h.can_fua() and h.can_flush() and h.can_trim() and h.can_zero() and h.can_fast_zero()
assert h.can_df()
h.shutdown()

# Without structured replies there is no metadata context and no BLOCK_STATUS.
h = nbd.NBD()
h.set_request_structured_replies(False)
h.add_meta_context("base:allocation")
h.connect_uri(uri)
assert not h.get_structured_replies_negotiated()
assert not h.can_meta_context("base:allocation")
assert h.pread(4096, 0) == bytes(4096)
h.shutdown()
`,
    );
  });
});

Deno.test("Connection reports block status after write, trim and write zeroes", async () => {
  await withServer({ sizeBytes: 16 * MiB }, async (f) => {
    await nbdsh(
      f.uri,
      `
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(uri)
M = 1024 * 1024
h.pwrite(b"\\x01" * (4 * M), 0)
h.trim(M, M)
h.zero(M, 2 * M, nbd.CMD_FLAG_FAST_ZERO)
h.zero(4096, 3 * M + 8192, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)

def status(offset, length, flags=0):
    out = []
    def cb(context, off, entries, err):
        assert context == "base:allocation"
        out.extend(zip(entries[0::2], entries[1::2]))
    h.block_status(length, offset, cb, flags)
    return out

got = status(0, 16 * M)
expected = [(M, 0), (2 * M, 3), (8192, 0), (4096, 3), (M - 12288, 0), (12 * M, 3)]
assert got == expected, got
one = status(0, 16 * M, nbd.CMD_FLAG_REQ_ONE)
assert one == [(M, 0)], one
h.set_strict_mode(0)
unaligned = status(M - 100, 1000)
assert unaligned == [(100, 0), (900, 3)], unaligned
assert h.pread(M, M) == bytes(M)
assert h.pread(4096, 0) == b"\\x01" * 4096
h.shutdown()
`,
    );
    assert.ok(f.device.fuaCount >= 1);
  });
});

Deno.test("Connection answers EINVAL to unaligned, out-of-range, zero-length and bad-flag requests", async () => {
  await withServer({ sizeBytes: 8 * MiB }, async (f) => {
    await nbdsh(
      f.uri,
      EXPECT_ERRNO + `
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(uri)
h.set_strict_mode(0)
size = h.get_size()
expect_errno(errno.EINVAL, h.pread, 4096, 100)
expect_errno(errno.EINVAL, h.pread, 1000, 0)
expect_errno(errno.EINVAL, h.pwrite, b"x" * 100, 0)
expect_errno(errno.EINVAL, h.pread, 4096, size)
expect_errno(errno.EINVAL, h.pread, 8192, size - 4096)
expect_errno(errno.EINVAL, h.pwrite, b"x" * 4096, size)
expect_errno(errno.EINVAL, h.trim, 4096, size)
expect_errno(errno.EINVAL, h.zero, 8192, size - 4096)
expect_errno(errno.EINVAL, h.block_status, 4096, size, lambda *a: 0)
expect_errno(errno.EINVAL, h.trim, 0, 0)
expect_errno(errno.EINVAL, h.pread, 4096, 0, nbd.CMD_FLAG_REQ_ONE)
expect_errno(errno.EINVAL, h.pwrite, b"x" * 4096, 0, nbd.CMD_FLAG_NO_HOLE)
# The connection still works after every refusal.
h.pwrite(b"y" * 4096, 4096, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 4096) == b"y" * 4096
h.flush()
h.shutdown()
`,
    );
  });
});

Deno.test("Connection answers EPERM to writes on a read-only export and still serves reads", async () => {
  await withServer({ sizeBytes: 8 * MiB, readOnly: true }, async (f) => {
    await nbdsh(
      f.uri,
      EXPECT_ERRNO + `
h = nbd.NBD()
h.connect_uri(uri)
assert h.is_read_only()
assert not h.can_trim() and not h.can_zero()
h.set_strict_mode(0)
expect_errno(errno.EPERM, h.pwrite, b"x" * 4096, 0)
expect_errno(errno.EPERM, h.trim, 4096, 0)
expect_errno(errno.EPERM, h.zero, 4096, 0)
assert h.pread(8192, 0) == bytes(8192)
h.flush()
h.shutdown()
`,
    );
  });
});

Deno.test("Connection maps device errors to EIO and ENOSPC and the connection goes on", async () => {
  await withServer({ sizeBytes: 8 * MiB }, async (f) => {
    f.device.failNext("write", new StoreError("Transient", "Cannot write object: boom"));
    f.device.failNext("read", new Error("Cannot read: unknown trouble"));
    f.device.failNext("trim", new DeviceError("ENOSPC", "Cannot trim: full"));
    f.device.failNext("flush", new StoreError("Fatal", "Cannot flush: bucket gone"));
    await nbdsh(
      f.uri,
      EXPECT_ERRNO + `
h = nbd.NBD()
h.connect_uri(uri)
expect_errno(errno.EIO, h.pwrite, b"x" * 4096, 0)
expect_errno(errno.EIO, h.pread, 4096, 0)
expect_errno(errno.ENOSPC, h.trim, 4096, 0)
expect_errno(errno.EIO, h.flush)
h.pwrite(b"z" * 4096, 0)
assert h.pread(4096, 0) == b"z" * 4096
h.flush()
h.shutdown()

# Simple replies carry the errno too.
h = nbd.NBD()
h.set_request_structured_replies(False)
h.connect_uri(uri)
assert not h.get_structured_replies_negotiated()
h.set_strict_mode(0)
expect_errno(errno.EINVAL, h.pread, 4096, 100)
assert h.pread(4096, 0) == b"z" * 4096
h.shutdown()
`,
    );
  });
});

Deno.test("Connection makes a FLUSH on one connection cover writes completed on another (multi-conn)", async () => {
  await withServer({ sizeBytes: 8 * MiB }, async (f) => {
    await nbdsh(
      f.uri,
      `
a = nbd.NBD()
b = nbd.NBD()
a.connect_uri(uri)
b.connect_uri(uri)
assert a.can_multi_conn() and b.can_multi_conn()
a.pwrite(b"m" * 65536, 0)
b.flush()
assert b.pread(65536, 0) == b"m" * 65536
a.shutdown()
b.shutdown()
`,
    );
    assert.ok(f.device.flushCount >= 1);
  });
});
