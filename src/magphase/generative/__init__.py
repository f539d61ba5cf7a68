"""magphase.generative"""
