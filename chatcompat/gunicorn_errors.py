"""gunicorn's HTTP parser errors, translated into our error classes.

gunicorn raises them while it reads a request's head (before any app code runs: the
worker answers, see :mod:`chatcompat.gunicorn_workers`) and while the app reads the
body from ``wsgi.input`` (see :mod:`chatcompat.request_body`). Both answer with the
error this module picks::

    gunicorn exception                                  status  our class
    InvalidChunkSize, ChunkMissingTerminator,           400     InvalidChunkedEncoding
      InvalidChunkExtension
    NoMoreData (the client stopped mid-body)            400     InvalidBody
    InvalidRequestLine, InvalidRequestMethod,           400     BadRequestLine
      InvalidHTTPVersion
    InvalidHeader, InvalidHeaderName, ObsoleteFolding,  400     BadHeader
      InvalidSchemeHeaders
    LimitRequestLine                                    414     RequestLineTooLong
    ExpectationFailed                                   417     ExpectationFailed
    LimitRequestHeaders                                 431     HeaderFieldsTooLarge
    UnsupportedTransferCoding                           501     TransferCodingNotImplemented
    InvalidResponseHeader(Name) (the app's fault)       500     APIError
    another ParseException with a 4xx ``code``          same    InvalidRequest
    anything else                                       500     APIError

Messages name what was wrong (a header's name, never its value).
"""

from __future__ import annotations

import typing as t

from gunicorn.http import errors as http_errors

from . import errors

# Longest piece of client-sent text quoted back in a message.
_QUOTE_CHARS = 60


def _quote(value: object) -> str:
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    if len(text) > _QUOTE_CHARS:
        text = text[:_QUOTE_CHARS] + "..."
    return repr(text)


def _chunk_size(exc: t.Any) -> errors.APIError:
    return errors.InvalidChunkedEncoding(
        f"The request body's chunked encoding has an invalid chunk size {_quote(exc.data)}: "
        "a chunk size is a hexadecimal number of bytes."
    )


def _chunk_terminator(exc: t.Any) -> errors.APIError:
    return errors.InvalidChunkedEncoding(
        "A chunk of the chunked request body is not followed by CRLF: the chunk holds more "
        "data than its size says, or the body was cut off."
    )


def _chunk_extension(exc: t.Any) -> errors.APIError:
    return errors.InvalidChunkedEncoding(
        f"The request body's chunked encoding has an invalid chunk extension ({exc.reason})."
    )


def _no_more_data(exc: t.Any) -> errors.APIError:
    return errors.InvalidBody(
        "The request body ended before it was complete: the client stopped sending it."
    )


def _request_line(exc: t.Any) -> errors.APIError:
    if isinstance(exc, http_errors.InvalidRequestMethod):
        return errors.BadRequestLine(f"The request method {_quote(exc.method)} is not valid.")
    if isinstance(exc, http_errors.InvalidHTTPVersion):
        return errors.BadRequestLine(
            f"The HTTP version {_quote(exc.version)} is not supported; use HTTP/1.1."
        )
    return errors.BadRequestLine()


def _header(exc: t.Any) -> errors.APIError:
    if isinstance(exc, http_errors.ObsoleteFolding):
        return errors.BadHeader(
            f"The header {_quote(exc.hdr)} is folded over several lines (obsolete line "
            "folding), which HTTP/1.1 does not allow."
        )
    if isinstance(exc, http_errors.InvalidHeaderName):
        return errors.BadHeader(f"The header name {_quote(exc.hdr)} is not a valid token.")
    if isinstance(exc, http_errors.InvalidSchemeHeaders):
        return errors.BadHeader("The request's scheme headers contradict each other.")
    return errors.BadHeader(
        f"The header {_quote(exc.hdr)} is not valid (a control character in its value, "
        "a line not ended by CRLF, or a repeated header that must be unique)."
    )


def _request_line_too_long(exc: t.Any) -> errors.APIError:
    limit = f" than {exc.max_size} bytes" if exc.max_size is not None else ""
    return errors.RequestLineTooLong(
        f"The request line (method, target, version) is longer{limit}."
    )


def _header_fields_too_large(exc: t.Any) -> errors.APIError:
    return errors.HeaderFieldsTooLarge(
        f"The request's header fields are too large or too many ({exc})."
    )


def _expectation(exc: t.Any) -> errors.APIError:
    return errors.ExpectationFailed(
        f"The Expect header {_quote(exc.expect)} asks for something this server does not do."
    )


def _transfer_coding(exc: t.Any) -> errors.APIError:
    return errors.TransferCodingNotImplemented(
        f"The Transfer-Encoding {_quote(exc.hdr)} is not supported; use chunked or none."
    )


# Checked in order: a subclass before its base (InvalidResponseHeader is an InvalidHeader).
_TABLE: tuple[tuple[type[BaseException], t.Callable[[t.Any], errors.APIError]], ...] = (
    (http_errors.InvalidResponseHeader, lambda exc: errors.APIError()),
    (http_errors.InvalidResponseHeaderName, lambda exc: errors.APIError()),
    (http_errors.InvalidChunkSize, _chunk_size),
    (http_errors.ChunkMissingTerminator, _chunk_terminator),
    (http_errors.InvalidChunkExtension, _chunk_extension),
    (http_errors.NoMoreData, _no_more_data),
    (http_errors.InvalidRequestLine, _request_line),
    (http_errors.InvalidRequestMethod, _request_line),
    (http_errors.InvalidHTTPVersion, _request_line),
    (http_errors.ObsoleteFolding, _header),
    (http_errors.InvalidHeaderName, _header),
    (http_errors.InvalidHeader, _header),
    (http_errors.InvalidSchemeHeaders, _header),
    (http_errors.LimitRequestLine, _request_line_too_long),
    (http_errors.LimitRequestHeaders, _header_fields_too_large),
    (http_errors.ExpectationFailed, _expectation),
    (http_errors.UnsupportedTransferCoding, _transfer_coding),
)


def from_gunicorn(exc: BaseException) -> errors.APIError:
    """The error to answer ``exc`` with (see the table in the module docstring).

    :param exc: what gunicorn raised while reading the request, or anything else that
        reached the worker's error handler.
    """
    for kind, translate in _TABLE:
        if isinstance(exc, kind):
            return translate(exc)
    status = getattr(exc, "code", None)
    if isinstance(exc, http_errors.ParseException) and isinstance(status, int):
        if 400 <= status < 500:
            generic = errors.InvalidRequest(f"The request is not valid HTTP/1.1: {exc}.")
            generic.status = status
            return generic
    return errors.APIError()
