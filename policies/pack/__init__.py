"""keystead's policy pack: the checks (pure, ``checks.py``) and the CrossGuard pack built from them.

``checks`` is what ``keystead plan`` runs; ``crossguard`` wraps the same checks
as pulumi-policy validations and imports pulumi_policy; ``__main__`` builds the
PolicyPack that ``pulumi preview --policy-pack policies/pack`` starts (it
serves until the engine stops it: never import it).
"""
