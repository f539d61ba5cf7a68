"""magphase.report"""
