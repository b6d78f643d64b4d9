"""The eligibility service: holds the facts upstream systems report and decides
who may create groups (SPEC E1–E6) and who may join them (SPEC C1–C10, C14).

It owns its own database and never calls another backend; the gateway brings
it the group-side facts (threshold, owner exemption) in each request.
"""
