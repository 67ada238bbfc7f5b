// ts/io/safetensors.ts: reading the committed fixtures (checked against an independent header
// parse), writer round trips, every validation error on corrupt files, atomic writes, sharded
// checkpoints, and the float conversions.

import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import {
  Checkpoint,
  SafetensorsFile,
  SafetensorsWriter,
  encodeHeader,
  floatToBf16Bits,
  floatToF16Bits,
  fromFloat32,
  toFloat32,
  writeSafetensors,
} from "../dist/io/safetensors.js";
import { ROOT, tempDir } from "./assets/data/helpers.mjs";

const FIX = join(ROOT, "test", "fixtures");

/** Independent minimal parse: header JSON and the raw bytes of one tensor. */
function rawTensor(file, name) {
  const b = readFileSync(file);
  const n = Number(b.readBigUInt64LE(0));
  const h = JSON.parse(b.subarray(8, 8 + n).toString());
  const [s, e] = h[name].data_offsets;
  return { header: h, bytes: b.subarray(8 + n + s, 8 + n + e) };
}

function expectCode(code, pattern) {
  return (e) => {
    assert.equal(e.code, code, `code ${e.code}: ${e.message}`);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

/** A valid file with the given tensors, then `mutate(bytes)` -> corrupt bytes. */
function makeFile(dir, name, header, data) {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const p = join(dir, name);
  writeFileSync(p, Buffer.concat([len, json, data]));
  return p;
}

test("reads fixture files: header, metadata, tensors identical to an independent parse", async () => {
  const file = join(FIX, "nf4", "bs64_weight_48x80.safetensors");
  const st = await SafetensorsFile.open(file);
  try {
    const { header } = rawTensor(file, "input");
    assert.deepEqual([...st.tensors.keys()].sort(), Object.keys(header).filter((k) => k !== "__metadata__").sort());
    for (const [name, info] of st.tensors) {
      assert.equal(info.dtype, header[name].dtype);
      assert.deepEqual(info.shape, header[name].shape);
      assert.equal(info.file, file);
      const got = await st.read(name);
      assert.deepEqual(Buffer.compare(got, rawTensor(file, name).bytes), 0, name);
    }
    const input = toFloat32(await st.read("input"), "F32");
    assert.equal(input.length, 48 * 80);
    assert.ok(input.every(Number.isFinite));
    // bf16 fixture: conversion equals the f32 dequant rounded to bf16.
    const dq = toFloat32(await st.read("dequant_f32"), "F32");
    const dqb = toFloat32(await st.read("dequant_bf16"), "BF16");
    for (let i = 0; i < dq.length; i++) assert.equal(dqb[i], toFloat32(fromFloat32(new Float32Array([dq[i]]), "BF16"), "BF16")[0]);
  } finally {
    await st.close();
  }
});

test("writer round trip: dtypes, empty and scalar tensors, metadata, header padded to 8", async (t) => {
  const dir = tempDir(t);
  const p = join(dir, "a.safetensors");
  const tensors = {
    f32: { dtype: "F32", shape: [2, 3], data: new Uint8Array(new Float32Array([1, 2, 3, 4, 5, -6]).buffer) },
    empty: { dtype: "BF16", shape: [0, 4], data: new Uint8Array(0) },
    scalar: { dtype: "I64", shape: [], data: new Uint8Array(8).fill(7) },
    u8: { dtype: "U8", shape: [5], data: new Uint8Array([1, 2, 3, 4, 5]) },
    b: { dtype: "BOOL", shape: [1], data: new Uint8Array([1]) },
  };
  await writeSafetensors(p, tensors, { format: "pt", note: "x" });
  assert.deepEqual(readdirSync(dir), ["a.safetensors"]);
  const raw = readFileSync(p);
  assert.equal(Number(raw.readBigUInt64LE(0)) % 8, 0);
  const st = await SafetensorsFile.open(p);
  assert.deepEqual(st.metadata, { format: "pt", note: "x" });
  for (const [name, v] of Object.entries(tensors)) {
    const info = st.info(name);
    assert.equal(info.dtype, v.dtype);
    assert.deepEqual(info.shape, v.shape);
    assert.deepEqual(new Uint8Array(await st.read(name)), v.data);
  }
  assert.deepEqual(Array.from(toFloat32(await st.read("f32"), "F32")), [1, 2, 3, 4, 5, -6]);
  await st.close();
});

test("corrupt files give E_FORMAT naming the file and the problem", async (t) => {
  const dir = tempDir(t);
  const good = { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "U8", shape: [4], data_offsets: [8, 12] } };
  const data = Buffer.alloc(12, 1);
  const cases = [
    ["tiny", (d) => writeFileSync(join(d, "tiny.safetensors"), Buffer.alloc(5)), /shorter than the 8-byte header length/],
    ["huge header", (d) => { const b = Buffer.alloc(16); b.writeBigUInt64LE(200_000_000n); writeFileSync(join(d, "huge header.safetensors"), b); }, /exceeds the 100000000-byte limit/],
    ["header past end", (d) => { const b = Buffer.alloc(16); b.writeBigUInt64LE(1000n); writeFileSync(join(d, "header past end.safetensors"), b); }, /runs past the end/],
    ["bad json", (d) => { const j = Buffer.from("{not json"); const l = Buffer.alloc(8); l.writeBigUInt64LE(BigInt(j.length)); writeFileSync(join(d, "bad json.safetensors"), Buffer.concat([l, j])); }, /not valid JSON/],
    ["array header", (d) => makeFile(d, "array header.safetensors", [1, 2], Buffer.alloc(0)), /not a JSON object/],
    ["bad dtype", (d) => makeFile(d, "bad dtype.safetensors", { ...good, a: { ...good.a, dtype: "F8" } }, data), /tensor 'a': unsupported dtype "F8"/],
    ["bad shape", (d) => makeFile(d, "bad shape.safetensors", { ...good, a: { ...good.a, shape: [-2] } }, data), /tensor 'a': shape \[-2\]/],
    ["size mismatch", (d) => makeFile(d, "size mismatch.safetensors", { ...good, a: { ...good.a, shape: [3] } }, data), /tensor 'a': dtype F32 x shape \[3\] needs 12 bytes but data_offsets span 8/],
    ["reversed offsets", (d) => makeFile(d, "reversed offsets.safetensors", { ...good, a: { ...good.a, data_offsets: [8, 0] } }, data), /data_offsets \[8,0\]/],
    ["overlap", (d) => makeFile(d, "overlap.safetensors", { a: good.a, b: { dtype: "U8", shape: [4], data_offsets: [4, 8] }, c: { dtype: "U8", shape: [4], data_offsets: [8, 12] } }, data), /overlaps/],
    ["gap", (d) => makeFile(d, "gap.safetensors", { a: good.a, b: { dtype: "U8", shape: [2], data_offsets: [10, 12] } }, data), /gap in the data region before tensor 'b'/],
    ["truncated", (d) => makeFile(d, "truncated.safetensors", good, data.subarray(0, 10)), /tensor 'b': data ends at byte 12 of the data region, which has only 10 bytes/],
    ["trailing bytes", (d) => makeFile(d, "trailing bytes.safetensors", good, Buffer.concat([data, Buffer.alloc(3)])), /data region has 15 bytes but the tensors cover 12/],
    ["bad metadata", (d) => makeFile(d, "bad metadata.safetensors", { __metadata__: { x: 1 }, ...good }, data), /__metadata__.x must be a string/],
  ];
  for (const [name, make, re] of cases) {
    make(dir);
    const file = join(dir, `${name}.safetensors`);
    await assert.rejects(SafetensorsFile.open(file), (e) => {
      assert.equal(e.code, "E_FORMAT", `${name}: ${e.code} ${e.message}`);
      assert.ok(e.message.startsWith(file + ": "), `${name}: ${e.message}`);
      assert.match(e.message, re, name);
      return true;
    });
  }
  await assert.rejects(SafetensorsFile.open(join(dir, "missing.safetensors")), expectCode("E_IO", /no such file/));
  // A real fixture cut short.
  const full = readFileSync(join(FIX, "nf4", "bs64_n4096.safetensors"));
  writeFileSync(join(dir, "cut.safetensors"), full.subarray(0, full.length - 100));
  await assert.rejects(SafetensorsFile.open(join(dir, "cut.safetensors")), expectCode("E_FORMAT", /truncated/));
});

test("writer: declared order, sizes, chunks, abort and failed commits leave no file", async (t) => {
  const dir = tempDir(t);
  const p = join(dir, "w.safetensors");
  const entries = [
    { name: "x", dtype: "F32", shape: [4] },
    { name: "e", dtype: "F32", shape: [0] },
    { name: "y", dtype: "U8", shape: [3, 2] },
  ];
  let w = await SafetensorsWriter.create(p, entries);
  await assert.rejects(w.write("y", new Uint8Array(6)), expectCode("E_ARG", /expected tensor 'x' next/));
  await assert.rejects(w.write("x", new Uint8Array(15)), expectCode("E_SHAPE", /needs 16 bytes, got 15/));
  await w.writeChunk("x", new Uint8Array(10).fill(1));
  await w.writeChunk("x", new Uint8Array(6).fill(2));
  await w.write("e", new Uint8Array(0));
  assert.equal(w.pending, "y");
  assert.ok(!existsSync(p), "nothing at the destination before commit");
  await w.abort();
  assert.deepEqual(readdirSync(dir), [], "abort removes the temporary file");

  w = await SafetensorsWriter.create(p, entries);
  await w.write("x", new Uint8Array(16));
  await assert.rejects(w.commit(), expectCode("E_ARG", /2 declared tensor\(s\) not written, starting with 'e'/));
  assert.deepEqual(readdirSync(dir), []);

  await assert.rejects(SafetensorsWriter.create(p, [entries[0], entries[0]]), expectCode("E_ARG", /listed twice/));
  await assert.rejects(SafetensorsWriter.create(p, [{ name: "z", dtype: "F12", shape: [1] }]), expectCode("E_DTYPE"));
  await assert.rejects(SafetensorsWriter.create(join(dir, "no", "such", "dir.safetensors"), entries), expectCode("E_IO"));

  w = await SafetensorsWriter.create(p, entries);
  await w.write("x", new Uint8Array(16).fill(9));
  await w.write("e", new Uint8Array(0));
  await w.write("y", new Uint8Array([1, 2, 3, 4, 5, 6]));
  await w.commit();
  assert.deepEqual(readdirSync(dir), ["w.safetensors"]);
  const st = await SafetensorsFile.open(p);
  assert.deepEqual([...new Uint8Array(await st.read("y"))], [1, 2, 3, 4, 5, 6]);
  assert.deepEqual([...st.tensors.keys()].sort(), ["e", "x", "y"]);
  await st.close();
  // The header the writer produces is what the reader accepts for any entry list.
  const { header, dataBytes } = encodeHeader(entries, { a: "b" });
  assert.equal(dataBytes, 22);
  assert.equal((header.length - 8) % 8, 0);
});

test("Checkpoint: single file and shards with an index; errors name the files", async (t) => {
  const single = await Checkpoint.open(join(FIX, "nf4", "bnb_linear"));
  assert.ok(single.has("model.layers.0.self_attn.q_proj.weight"));
  assert.deepEqual(single.info("model.layers.0.self_attn.q_proj.weight").shape, [1920, 1]);
  await assert.rejects(single.read("nope"), expectCode("E_ARG", /no tensor 'nope'/));
  await single.close();

  const dir = tempDir(t);
  const a = new Float32Array([1, 2, 3]);
  await writeSafetensors(join(dir, "model-00001-of-00002.safetensors"), { "w.a": { dtype: "F32", shape: [3], data: new Uint8Array(a.buffer) } });
  await writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), {
    "w.b": { dtype: "U8", shape: [2], data: new Uint8Array([5, 6]) },
    "w.c": { dtype: "U8", shape: [1], data: new Uint8Array([7]) },
  });
  const index = { metadata: { total_size: 15 }, weight_map: { "w.a": "model-00001-of-00002.safetensors", "w.b": "model-00002-of-00002.safetensors", "w.c": "model-00002-of-00002.safetensors" } };
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify(index));
  const ck = await Checkpoint.open(dir);
  assert.deepEqual(ck.names(), ["w.a", "w.b", "w.c"]);
  assert.equal(ck.shardFiles().length, 2);
  assert.deepEqual(Array.from(toFloat32(await ck.read("w.a"), "F32")), [1, 2, 3]);
  assert.deepEqual([...(await ck.read("w.c"))], [7]);
  assert.equal(ck.info("w.b").file, join(dir, "model-00002-of-00002.safetensors"));
  await ck.close();

  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { ...index.weight_map, "w.d": "model-00002-of-00002.safetensors" } }));
  await assert.rejects(Checkpoint.open(dir), expectCode("E_FORMAT", /tensor 'w.d' is listed in model.safetensors.index.json but missing from this shard/));
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { "w.a": "../x.safetensors" } }));
  await assert.rejects(Checkpoint.open(dir), expectCode("E_FORMAT", /not a .safetensors file name/));
  writeFileSync(join(dir, "model.safetensors.index.json"), "{");
  await assert.rejects(Checkpoint.open(dir), expectCode("E_FORMAT", /model.safetensors.index.json: not valid JSON/));
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: {} }));
  await assert.rejects(Checkpoint.open(dir), expectCode("E_FORMAT", /model.safetensors.index.json: "weight_map" is empty/));
  await assert.rejects(Checkpoint.open(tempDir(t)), expectCode("E_IO", /no model.safetensors or model.safetensors.index.json/));
  const folder = tempDir(t);
  mkdirSync(join(folder, "model.safetensors"));
  await assert.rejects(Checkpoint.open(folder), expectCode("E_FORMAT", new RegExp(`${join(folder, "model.safetensors").replace(/[.]/g, "\\.")}: is a folder, not a safetensors file`)));
});

test("float conversions: bf16 and f16 round to nearest even, toFloat32 of every float dtype", () => {
  assert.equal(floatToBf16Bits(1), 0x3f80);
  assert.equal(floatToBf16Bits(1.00390625), 0x3f80); // tie -> even
  assert.equal(floatToBf16Bits(1.01171875), 0x3f82); // tie -> even (up)
  assert.equal(floatToBf16Bits(-0), 0x8000);
  assert.equal(floatToBf16Bits(NaN) & 0x7fc0, 0x7fc0);
  assert.equal(floatToF16Bits(1), 0x3c00);
  assert.equal(floatToF16Bits(65504), 0x7bff);
  assert.equal(floatToF16Bits(65520), 0x7c00);
  assert.equal(floatToF16Bits(2 ** -24), 0x0001);
  assert.equal(floatToF16Bits(-2.5), 0xc100);
  const vals = new Float32Array([0, -0, 1.5, -3.25, 65504, 2 ** -24, 1e-3]);
  for (const dt of ["F32", "F16", "BF16"]) {
    const back = toFloat32(fromFloat32(vals, dt), dt);
    for (let i = 0; i < vals.length; i++) {
      if (dt === "F32") assert.ok(Object.is(back[i], vals[i]));
      else assert.ok(Math.abs(back[i] - vals[i]) <= Math.abs(vals[i]) * (dt === "F16" ? 2 ** -11 : 2 ** -8) + 2 ** -25, `${dt} ${vals[i]} -> ${back[i]}`);
    }
  }
  const f64 = new Float64Array([1.5, -2]);
  assert.deepEqual(Array.from(toFloat32(new Uint8Array(f64.buffer), "F64")), [1.5, -2]);
  // Unaligned F32 bytes are copied, not viewed.
  const buf = new Uint8Array(9);
  buf.set(new Uint8Array(new Float32Array([2.5, -1]).buffer), 1);
  assert.deepEqual(Array.from(toFloat32(buf.subarray(1), "F32")), [2.5, -1]);
  assert.throws(() => toFloat32(new Uint8Array(4), "I32"), expectCode("E_DTYPE"));
  assert.throws(() => toFloat32(new Uint8Array(3), "F16"), expectCode("E_SHAPE"));
});
