"""fastreco.deploy"""
