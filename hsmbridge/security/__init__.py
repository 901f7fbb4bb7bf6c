"""The security layer: who is calling (authn), what they may do (authz), what happened (audit),
how often (ratelimit), and over which channel (tls).

Every module here is standalone and transport-neutral: the REST facade and the gRPC servicers call
into it; nothing in here imports a transport. `hsmbridge.security.config.SecurityConfig` gathers
the configuration sections of every module.
"""
