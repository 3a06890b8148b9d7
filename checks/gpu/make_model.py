#!/usr/bin/env python3
"""Generate checks/gpu/matmul_chain, the SavedModel the GPU benchmark runs.

Usage:
    TF_CPP_MIN_LOG_LEVEL=2 python checks/gpu/make_model.py [OUTDIR]

Signature `serving_default`: `size` int32 scalar, `steps` int32 scalar -> `checksum` float32
scalar. It makes a size x size matrix A inside the graph (stateless uniform in [-1, 1), seed
fixed, scaled by 1/sqrt(size)), then `steps` times X = tanh(X @ A) starting from X = A, and
returns sum(X). No weights are stored and only two scalars cross the wire, so the time per call
is compute: 2 * size^3 * steps floating-point operations.

Pinned generator: tensorflow-cpu==2.18.1, like checks/fixtures/make_fixtures.py.
"""

import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402


class _MatmulChain(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([], tf.int32, name="size"),
            tf.TensorSpec([], tf.int32, name="steps"),
        ]
    )
    def serve(self, size, steps):
        scale = tf.math.rsqrt(tf.cast(size, tf.float32))
        a = tf.random.stateless_uniform(
            tf.stack([size, size]), seed=[7, 11], minval=-1.0, maxval=1.0
        ) * scale

        def body(i, x):
            return i + 1, tf.tanh(tf.matmul(x, a))

        _, x = tf.while_loop(
            lambda i, x: i < steps,
            body,
            [tf.constant(0), a],
            shape_invariants=[tf.TensorShape([]), tf.TensorShape([None, None])],
        )
        return {"checksum": tf.reduce_sum(x)}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(out, "matmul_chain")
    shutil.rmtree(path, ignore_errors=True)
    m = _MatmulChain(name="matmul_chain")
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve.get_concrete_function()})
    loaded = tf.saved_model.load(path)
    result = loaded.signatures["serving_default"](size=tf.constant(64), steps=tf.constant(3))
    print(f"{path}: size 64, steps 3 -> checksum {float(result['checksum'])}")


if __name__ == "__main__":
    main()
