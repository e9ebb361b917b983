"""Schemathesis hooks for scripts/api-check.sh (loaded through SCHEMATHESIS_HOOKS).

Two things the document cannot say, and nothing else: no check is relaxed by this file.
"""

from urllib.parse import urlencode

import schemathesis
import urllib3.connectionpool

_put_conn = urllib3.connectionpool.HTTPConnectionPool._put_conn


def _put_conn_closed(self, conn):
    # A connection that was answered with 101 belongs to a websocket session from then on: a
    # next request written on it would be read by supd as websocket frames. requests cannot
    # tell, so no connection is reused; every request gets a fresh one (cheap on loopback).
    if conn is not None:
        conn.close()
    _put_conn(self, None)


urllib3.connectionpool.HTTPConnectionPool._put_conn = _put_conn_closed


def _is_list(case):
    return case.operation.path.endswith("/service-instances") and case.method.upper() in ("GET", "HEAD")


@schemathesis.hook
def filter_query(context, query):
    # The whole query string is limited to 8192 bytes as sent (documented, 400 past it); a
    # schema can bound each parameter but not their encoded sum.
    return len(urlencode(query or {}, doseq=True)) <= 8192


@schemathesis.hook
def filter_failure(context, failure, case, response):
    # `keys=true` with `count=true` is 400 by design; OpenAPI has no way to say that two
    # parameters exclude each other, so a "valid data rejected" for exactly that is expected.
    query = case.query or {}
    both = str(query.get("keys")).lower() == "true" and str(query.get("count")).lower() == "true"
    if both and _is_list(case) and response.status_code == 400:
        return type(failure).__name__ != "RejectedPositiveData"
    return True


def _patch_lambda_description():
    # CPython 3.11 before 3.11.8 can raise SystemError ("AST constructor recursion depth
    # mismatch", gh-106905) from ast.parse deep in a stack; hypothesis calls it only to name a
    # filter in a repr. Fall back to a plain name there instead of failing the operation.
    from hypothesis.internal import lambda_sources

    describe = lambda_sources.lambda_description

    def lambda_description(f):
        try:
            return describe(f)
        except SystemError:
            return "lambda"

    lambda_sources.lambda_description = lambda_description


_patch_lambda_description()
