import assert from "node:assert/strict";
import { availableMemoryBytes, nbdInputBufferBytes, tuningDefaults } from "./memory_defaults.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

Deno.test("tuningDefaults() keeps today's figures on large machines and scales down on small ones", () => {
  assert.deepEqual(tuningDefaults(24 * GiB), {
    objectBytes: 4 * MiB,
    dirtyBytes: 256 * MiB,
    cacheBytes: 64 * MiB,
    uploads: 32,
  });
  assert.deepEqual(tuningDefaults(512 * MiB), {
    objectBytes: 4 * MiB,
    dirtyBytes: 32 * MiB,
    cacheBytes: 16 * MiB,
    uploads: 7,
  });
  // The guest of a 512 MiB VM sees about 457 MiB.
  const vm = tuningDefaults(457 * MiB);
  assert.equal(vm.dirtyBytes, 28 * MiB);
  assert.equal(vm.cacheBytes, 14 * MiB);
  assert.equal(vm.uploads, 6);
  // Tiny: the dirty limit never drops below two objects, uploads never below one.
  const tiny = tuningDefaults(64 * MiB);
  assert.equal(tiny.dirtyBytes, 8 * MiB);
  assert.equal(tiny.uploads, 1);
  for (const memory of [64 * MiB, 300 * MiB, 1 * GiB, 3 * GiB, 100 * GiB]) {
    const d = tuningDefaults(memory);
    assert(d.dirtyBytes >= 2 * d.objectBytes, `dirty holds two objects at ${memory}`);
    assert((d.uploads + 1) * d.objectBytes <= d.dirtyBytes, `uploads fit the dirty limit at ${memory}`);
  }
});

Deno.test("availableMemoryBytes() takes the tightest cgroup limit, ignoring 'max' and huge v1 values", () => {
  const files = (map: Record<string, string>) => (path: string) => map[path];
  const system = () => 8 * GiB;
  assert.equal(availableMemoryBytes(files({}), system), 8 * GiB);
  assert.equal(availableMemoryBytes(files({ "/sys/fs/cgroup/memory.max": "max\n" }), system), 8 * GiB);
  assert.equal(
    availableMemoryBytes(files({ "/sys/fs/cgroup/memory.max": "536870912\n" }), system),
    512 * MiB,
  );
  assert.equal(
    availableMemoryBytes(
      files({
        "/proc/self/cgroup": "4:memory:/box\n0::/\n",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
        "/sys/fs/cgroup/memory/box/memory.limit_in_bytes": "268435456\n",
      }),
      system,
    ),
    256 * MiB,
  );
  assert.equal(
    availableMemoryBytes(
      files({
        "/proc/self/cgroup": "0::/system.slice/lsvd.service\n",
        "/sys/fs/cgroup/system.slice/lsvd.service/memory.max": "1073741824",
      }),
      system,
    ),
    1 * GiB,
  );
});

Deno.test("nbdInputBufferBytes() is a thirty-second of the dirty limit, 1 to 4 MiB", () => {
  const MiB = 2 ** 20;
  const dirtyFor = (memoryBytes: number) => tuningDefaults(memoryBytes).dirtyBytes;
  assert.equal(nbdInputBufferBytes(dirtyFor(457 * MiB)), MiB, "the 512 MiB VM");
  assert.equal(nbdInputBufferBytes(dirtyFor(1024 * MiB)), 2 * MiB);
  assert.equal(nbdInputBufferBytes(dirtyFor(2048 * MiB)), 4 * MiB, "as before from 2 GiB up");
  assert.equal(nbdInputBufferBytes(dirtyFor(64 * 1024 * MiB)), 4 * MiB);
  assert.equal(nbdInputBufferBytes(8 * MiB), MiB, "a tiny --dirty-limit");
});
