import assert from "node:assert/strict";
import { pinMallocMmapThreshold } from "./malloc_tuning.ts";

Deno.test("pinMallocMmapThreshold() is accepted by glibc on Linux and leaves large allocations usable", () => {
  if (Deno.build.os !== "linux") return;
  assert(pinMallocMmapThreshold(), "mallopt(M_MMAP_THRESHOLD) was refused or libc.so.6 not found");
  // Allocate and free object-sized buffers after the change: the allocator must still serve them.
  for (let i = 0; i < 8; i++) {
    const b = new Uint8Array(4 << 20);
    b[b.length - 1] = i;
    assert(b[b.length - 1] === i);
  }
});
