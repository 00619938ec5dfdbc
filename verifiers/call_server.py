"""Candidate side of a judged run: serve the function under test over a pipe pair.

This file's text (after verifiers/wire.py's) runs inside the sandbox, in a private namespace,
after the candidate's own code. It answers call requests from the judge with plain values
(verifiers/wire.py) and nothing else. Everything here is untrusted once the candidate's code has
run: the candidate may have replaced any builtin or module this loop uses, so the judge treats
whatever arrives as a claim, decodes it strictly, and decides the verdict on its own side.
"""


def serve(namespace, rfd, wfd, entry_point):  # noqa: C901 - one loop, one place
    import contextlib
    import io

    fn = namespace.get(entry_point)
    write_frame(wfd, {"ready": True, "callable": callable(fn)})  # noqa: F821 - from wire.py
    while True:
        try:
            request = read_frame(rfd)  # noqa: F821
        except Closed:  # noqa: F821 - the judge is done
            return
        captured = io.StringIO()
        reply = {"id": request.get("id")}
        try:
            args = decode(request.get("args"))  # noqa: F821
            kwargs = decode(request.get("kwargs"))  # noqa: F821
            with contextlib.redirect_stdout(captured):
                result = fn(*args, **kwargs)
            reply["ok"] = encode(result)  # noqa: F821
        except BaseException as e:  # noqa: BLE001 - SystemExit too: reported, not obeyed
            try:
                reply["err"] = [type(e).__name__, str(e)[:500]]
            except BaseException:  # noqa: BLE001 - a hostile __str__
                reply["err"] = [type(e).__name__, ""]
            reply.pop("ok", None)
        reply["out"] = captured.getvalue()[-300:]
        write_frame(wfd, reply)  # noqa: F821
