"""magphase.models"""
