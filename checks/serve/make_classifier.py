"""Writes a SavedModel with classify and regress signatures, as TensorFlow Serving's Classify and
Regress expect them: one input, "inputs", of serialized tf.Example protos.

    make_classifier.py OUT_DIR

Each example carries one float feature "x". The classify signature ("serving_default" and
"classify") answers classes ["pos", "neg"] with scores [x, 1 - x]; the regress signature
("regress") answers outputs = x / 2 + 2. Run by checks/tests/serve.rs with the serving venv's
TensorFlow (the version the fixtures were made with), so no binary model is committed for it.
"""

import sys

import tensorflow as tf

tf1 = tf.compat.v1
# The v1 builders this uses print deprecation notices; the test output is clearer without them.
tf.get_logger().setLevel("ERROR")


def main(out):
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf1.placeholder(tf.string, [None], name="tf_example")
        features = tf1.io.parse_example(serialized, {"x": tf1.io.FixedLenFeature([1], tf.float32)})
        x = features["x"]
        scores = tf.concat([x, 1.0 - x], axis=1)
        classes = tf.tile(tf.constant([["pos", "neg"]]), [tf.shape(x)[0], 1])
        values = x / 2.0 + 2.0
        classify = tf1.saved_model.classification_signature_def(serialized, classes, scores)
        regress = tf1.saved_model.regression_signature_def(serialized, values)
        with tf1.Session(graph=graph) as session:
            builder = tf1.saved_model.Builder(out)
            builder.add_meta_graph_and_variables(
                session,
                [tf1.saved_model.tag_constants.SERVING],
                signature_def_map={
                    "serving_default": classify,
                    "classify": classify,
                    "regress": regress,
                },
            )
            builder.save()


if __name__ == "__main__":
    main(sys.argv[1])
