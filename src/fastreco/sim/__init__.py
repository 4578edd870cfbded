"""fastreco.sim"""
