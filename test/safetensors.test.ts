// The safetensors reader accepts what it writes and rejects malformed files with an error
// that names the file and the tensor.
import t from 'tap';
import fc from 'fast-check';
import { parseSafetensors, serializeSafetensors, tensorF32, TypelensError } from '../src/index.js';

const good = () =>
  Buffer.concat(
    serializeSafetensors({
      a: { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
      b: { dtype: 'F16', shape: [2], data: Uint16Array.from([0x3c00, 0xc000]) },
    }),
  );
const withHeader = (h: unknown, dataBytes = 32) => {
  const j = Buffer.from(JSON.stringify(h));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(j.length));
  return Buffer.concat([len, j, Buffer.alloc(dataBytes)]);
};

t.test('round trip, dtypes decoded to f32', async (t) => {
  const f = parseSafetensors(good(), 'x.safetensors');
  t.same(Array.from(tensorF32(f, 'a')), [1, 2, 3, 4, 5, 6]);
  t.same(Array.from(tensorF32(f, 'b')), [1, -2]);
});

t.test('malformed files give clear errors', async (t) => {
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(0), /x.st: file is 0 bytes/],
    [new Uint8Array(5), /shorter than the 8-byte header/],
    [
      (() => {
        const b = Buffer.alloc(16);
        b.writeBigUInt64LE(1n << 40n);
        return b;
      })(),
      /header length 1099511627776 is larger than the file/,
    ],
    [Buffer.concat([Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0xff, 0xfe, 0x7b])]), /not valid UTF-8 JSON/],
    [withHeader({ w: { dtype: 'I8', shape: [1], data_offsets: [0, 1] } }), /tensor "w": unsupported dtype "I8"/],
    [withHeader({ w: { dtype: 'F32', shape: [2.5], data_offsets: [0, 10] } }), /tensor "w": shape \[2.5\]/],
    [withHeader({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }), /tensor "w": shape \[-1\]/],
    [
      withHeader({ w: { dtype: 'F32', shape: [100], data_offsets: [0, 400] } }),
      /tensor "w": data_offsets \[0, 400\] run past the data area/,
    ],
    [
      withHeader({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }),
      /tensor "w": 8 bytes but F32\[3\] needs 12/,
    ],
    [
      withHeader({
        u: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        v: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
      }),
      /"u" and "v" overlap/,
    ],
  ];
  const dupJson =
    '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
  const dupLen = Buffer.alloc(8);
  dupLen.writeBigUInt64LE(BigInt(dupJson.length));
  cases.push([Buffer.concat([dupLen, Buffer.from(dupJson), Buffer.alloc(8)]), /tensor "w" is listed twice/]);
  for (const [buf, re] of cases) t.throws(() => parseSafetensors(buf, 'x.st'), re);
});

t.test('fuzz: random byte mutations either load or throw TypelensError', async (t) => {
  const base = good();
  let loaded = 0,
    rejected = 0;
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
      (muts) => {
        const b = Buffer.from(base);
        for (const [i, v] of muts) b[i % b.length] = v;
        try {
          const f = parseSafetensors(b, 'fuzz');
          for (const k of f.entries.keys()) tensorF32(f, k);
          loaded++;
          return true;
        } catch (e) {
          rejected++;
          return e instanceof TypelensError;
        }
      },
    ),
    { numRuns: 2000 },
  );
  t.ok(loaded + rejected === 2000, `${loaded} loaded, ${rejected} rejected, none escaped`);
});
