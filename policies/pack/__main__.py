"""keystead's CrossGuard policy pack: ``pulumi preview --policy-pack policies/pack``.

Building the PolicyPack starts pulumi-policy's gRPC server, prints its port
for the Pulumi engine and serves until the engine stops it, so nothing may
import this module: the validations live in ``crossguard.py`` (tested there).
The Pulumi CLI runs this file as a script with the pack's folder on sys.path,
so it imports keystead by its installed name (PulumiPolicy.yaml points the
CLI at the repository's .venv, where keystead is installed).
"""

from pulumi_policy import PolicyPack

from keystead.policies.pack.crossguard import ENFORCEMENT, PACK_NAME, policies

PolicyPack(name=PACK_NAME, enforcement_level=ENFORCEMENT, policies=policies())
