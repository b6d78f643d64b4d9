"""The groups service: group-sets, sub-groups, memberships, admins and levels.

It owns the topology and the caps of SPEC T1–T6, the join bookkeeping of
C11–C13 and the roles and settings of R2–R3. It never calls another service:
the gateway brings the eligibility verdict and calls AddMember.
"""
