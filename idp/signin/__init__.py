"""The sign-in engine: the pipeline of steps (:mod:`idp.signin.pipeline`), the sign-in
context a step looks at and whose progress it is (:mod:`idp.signin.context`), and the
interaction that loads a sign-in for a step's page, runs the pipeline again and completes or
declines the sign-in (:mod:`idp.signin.interaction`).

A request goes: ``/authorize`` (``idp.oauth.authorize.start``) stores a pending request and
runs the pipeline; the browser is sent to the current step's page; that page loads its
sign-in with ``load_interaction(pending_id, serves=<its step>)`` and, when done, answers with
``continue_sign_in``; when no step is needed, ``idp.oauth.authorization_response.answer``
sends the code to the client.
"""
