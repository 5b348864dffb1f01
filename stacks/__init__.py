"""keystead.stacks: the Pulumi program and its components (docs/stacks.md).

    program.py            main(): read and check the config, declare everything, export
    config.py             the stack config and the spec it names, checked before any resource
    multi_region_key.py   keystead:aws:MultiRegionKey   symmetric key, DR replicas, aliases
    signing_key.py        keystead:aws:SigningKey       ECC SIGN_VERIFY key, optionally multi-Region
    hsm_key_store.py      keystead:aws:HsmKeyStore      CloudHSM cluster, HSMs, custom key store, keys
    gcp_key_ring.py       keystead:gcp:KeyRing          key ring, CryptoKeys, additive IAM members
    worker_identity.py    keystead:identity:WorkerIdentity  IAM role, GCP service account, rotator role
    kms.py                what the AWS key components share (tags, replicas, aliases)
    offline.py            the program under Pulumi's mocks: keystead plan and tests/stacks/

Pulumi.yaml's ``main: stacks/`` runs __main__.py. Every module here but config.py imports
pulumi; only ``keystead plan`` (keystead/cli/plan.py) imports this package from the CLI.
"""
