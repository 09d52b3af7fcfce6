"""The Open Inference Protocol ("V2", KServe's and Triton's REST dialect): decode and encode.

Pure functions over bytes, numpy and pandas; the endpoints live in
``mlscale.serving.v2``. Where the protocol leaves a choice open, mlscale does
what Seldon MLServer's MLflow runtime (``mlserver-mlflow`` 1.7) does, so that a
client of one works with the other unchanged:

* a column-based MLflow signature is one input per column, each of shape
  ``[-1, 1]`` in the metadata; a request may send a column as ``[n]`` or
  ``[n, 1]``; the request's default ``content_type`` is ``"pd"`` (one input per
  DataFrame column), and ``"np"``, ``"str"`` and ``"dict"`` hand the model an
  array, a list of strings or a dict of arrays instead;
* string columns travel as ``BYTES`` with ``content_type`` ``"str"``;
* a model's array output is one output named ``"output-1"`` of shape
  ``[n, 1]`` (``[n, ...]`` for wider arrays), a DataFrame output one output per
  column, a dict one per key;
* numbers are decoded with numpy's casts for the declared datatype (``INT64``
  data ``1.5`` is 1, as in MLServer), and written as the model returned them
  (float32 widened to float64, so the digits equal MLflow's ``/invocations``).

Where MLServer answers a client's mistake with a 500 or with FastAPI's 422, mlscale
answers 400 with the protocol's ``{"error": "..."}`` and what to fix.

The hot path is ``fp64_matrix`` (else ``decode_matrix``): a request for a
numeric signature becomes the float64 matrix the native path predicts on, with
no DataFrame in between.

Modules: ``datatypes`` (the tables), ``errors``, ``parsing`` (a request's
structure), ``decoding`` (what the model receives), ``responses`` and
``metadata``; this package's names are their public surface.
"""

from __future__ import annotations

from mlscale.protocol.v2.datatypes import DATATYPES, DEFAULT_OUTPUT, DICT, NUMPY, PANDAS, STRING, datatype_of
from mlscale.protocol.v2.decoding import decode, decode_matrix, fp64_columns, fp64_matrix
from mlscale.protocol.v2.errors import ModelNotFound, V2Error, error_body
from mlscale.protocol.v2.metadata import ModelMetadata, TensorMetadata, column_types, server_metadata
from mlscale.protocol.v2.parsing import (
    InferRequest,
    Tensor,
    load_document,
    parse_document,
    parse_request,
    request_head,
)
from mlscale.protocol.v2.responses import encode_response

__all__ = [
    "DATATYPES",
    "DEFAULT_OUTPUT",
    "DICT",
    "NUMPY",
    "PANDAS",
    "STRING",
    "InferRequest",
    "ModelMetadata",
    "ModelNotFound",
    "Tensor",
    "TensorMetadata",
    "V2Error",
    "column_types",
    "datatype_of",
    "decode",
    "decode_matrix",
    "encode_response",
    "error_body",
    "fp64_columns",
    "fp64_matrix",
    "load_document",
    "parse_document",
    "parse_request",
    "request_head",
    "server_metadata",
]
